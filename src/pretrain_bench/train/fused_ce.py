"""Fused output head + cross-entropy: the causal-LM loss without ever holding the [tokens × vocab] logits.

Why: for a small model with a large vocabulary the logits (and their fp32 copy, their gradient, the softmax) are the
largest activations of the whole step; freeing them buys a larger micro-batch. The loss is computed from the final
hidden states and the head weight in chunks of tokens. Each chunk's gradient with respect to its hidden states and
to the head weight is computed right there in the forward pass (the loss is a scalar, so its gradient is known up to
the factor that backward supplies), so backward only scales two stored tensors: no recompute, and at most one
chunk's logits exist at any time. The chunk is sized so that its logits take about as much memory as the hidden
states (chunks ≈ vocab / hidden).

Numerics: the same float operations as `transformers`' ForCausalLMLoss (logits in the compute dtype, upcast to fp32,
log-sum-exp, mean over non-ignored targets), but sums run per chunk: in fp32 the results equal the unfused model's up
to reordered floating-point sums (relative ~1e-7). Under bf16 the head-weight gradient is rounded to bf16 once per
chunk before it is summed in fp32 (the unfused head rounds once in total). Under fp16 the gradients are kept without
the 1/tokens factor until backward, where the loss scaler's factor arrives (see `_chunked`); the per-chunk head-weight
gradient is then an fp16 sum of up to `chunk` terms of |h|, which must stay below 65504 (an overflow shows as skipped
steps).

Integration: `apply(model)` swaps the HF model's output head for `FusedLinearCrossEntropyHead`, which keeps the same
Parameter under the same name (`lm_head.weight`, so tied embeddings stay tied and FSDP2/DeepSpeed see the same tree).
Called from the model's forward with hidden states it returns them unchanged (the model's `logits` output therefore
holds hidden states); the model's `loss_function` is replaced by one that calls the head again with the labels. That
second call happens inside the model's forward, where FSDP2 (whose root holds the head) has the weight gathered, and
as a module call, so DeepSpeed ZeRO-3's per-module hooks gather the weight for it too.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def chunk_tokens(n_tokens: int, vocab: int, hidden: int) -> int:
    """Tokens per chunk: about vocab / hidden chunks, so one chunk's logits are about the size of the hidden states."""
    return max(1, math.ceil(n_tokens / max(1, math.ceil(vocab / hidden))))


def _chunked(hidden, weight, targets, scale, chunk, ignore_index, with_grads):
    """Sum of per-token cross-entropy × scale, and (optionally) its gradients w.r.t. hidden and weight.

    The gradients are returned without `scale` in fp16 (the caller applies it in backward): they are computed here,
    before the loss scaler multiplies the loss, and softmax × 1/tokens is far below fp16's smallest subnormal (6e-8)
    for a large vocabulary and batch (1/50k × 1/16k ≈ 1e-9), so all but the target entries would round to zero. In
    bf16 and fp32 (fp32's exponent range) the scale is folded in here, in fp32, before the cast.
    """
    dtype = _compute_dtype(hidden)
    row_scale = 1.0 if dtype == torch.float16 else scale
    w = weight.to(dtype)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_h = torch.empty_like(hidden) if with_grads else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if with_grads else None
    for start in range(0, hidden.shape[0], chunk):
        h = hidden[start:start + chunk].to(dtype)
        y = targets[start:start + chunk]
        logits = (h @ w.t()).float()  # as ForCausalLMLoss: logits in the compute dtype, then fp32
        lse = torch.logsumexp(logits, dim=-1)
        valid = y != ignore_index
        safe_y = torch.where(valid, y, torch.zeros_like(y))
        target_logit = logits.gather(1, safe_y[:, None]).squeeze(1)
        total += torch.where(valid, lse - target_logit, torch.zeros_like(lse)).sum()
        if with_grads:
            # d(loss)/d(logits) = (softmax - one_hot(target)) × scale per valid row, 0 for ignored rows (in place).
            g = logits.sub_(lse[:, None]).exp_()
            g[torch.arange(g.shape[0], device=g.device), safe_y] -= 1.0
            g.mul_((valid.float() * row_scale)[:, None])
            g = g.to(dtype)
            grad_h[start:start + chunk] = (g @ w).to(hidden.dtype)
            grad_w += g.t() @ h
    return total * scale, grad_h, grad_w, dtype == torch.float16


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, scale, chunk, ignore_index):
        loss, grad_h, grad_w, unscaled = _chunked(hidden, weight, targets, scale, chunk, ignore_index,
                                                  with_grads=True)
        factor = torch.as_tensor(scale if unscaled else 1.0, dtype=torch.float32, device=hidden.device)
        ctx.save_for_backward(grad_h, grad_w, factor)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, factor = ctx.saved_tensors
        factor = factor * grad_out  # fp32; in fp16 the loss scale (≈ 2^16) brings 1/tokens back into range
        return (grad_h * factor.to(grad_h.dtype), (grad_w * factor).to(ctx.weight_dtype),
                None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         num_items_in_batch: torch.Tensor | int | None = None, ignore_index: int = -100,
                         chunk: int | None = None) -> torch.Tensor:
    """Mean (or sum / num_items_in_batch) cross-entropy of `hidden @ weight.T` against `targets`, chunked.

    hidden [N, d], weight [V, d], targets [N] (ignore_index: not counted).
    """
    if num_items_in_batch is not None:
        scale = 1.0 / torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=hidden.device)
    else:
        scale = 1.0 / (targets != ignore_index).sum().float()  # nan when nothing is counted, as F.cross_entropy
    chunk = chunk or chunk_tokens(hidden.shape[0], weight.shape[0], weight.shape[1])
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, scale, chunk, ignore_index)
    return _chunked(hidden, weight, targets, scale, chunk, ignore_index, with_grads=False)[0]


class FusedLinearCrossEntropyHead(nn.Module):
    """Output head that defers its matmul to the loss: identity without labels, the fused loss with them."""

    def __init__(self, head: nn.Linear, chunk: int | None = None):
        super().__init__()
        if getattr(head, "bias", None) is not None:
            raise ValueError("fused linear cross-entropy supports output heads without bias only")
        self.weight = head.weight  # the same Parameter: tied embeddings stay tied, the state-dict name stays
        self.chunk = chunk

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, **loss_kwargs) -> torch.Tensor:
        if labels is None:
            return hidden
        return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.weight, labels.reshape(-1),
                                    chunk=self.chunk, **loss_kwargs)


def _causal_lm_loss(head: FusedLinearCrossEntropyHead, logits: torch.Tensor, labels: torch.Tensor,
                    vocab_size: int | None = None, num_items_in_batch=None, ignore_index: int = -100,
                    shift_labels: torch.Tensor | None = None, **_) -> torch.Tensor:
    """ForCausalLMLoss's contract (`logits` here are the hidden states the fused head passed through)."""
    if shift_labels is None:  # tokens < n predict n: the same padding and shift as transformers
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return head(logits, labels=shift_labels.to(logits.device), num_items_in_batch=num_items_in_batch,
                ignore_index=ignore_index)


def apply(model: nn.Module, chunk: int | None = None) -> nn.Module:
    """Patch a built transformers causal LM in place to compute its loss with the fused head; returns it."""
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"fused linear cross-entropy needs an nn.Linear output head, got {type(head).__name__}")
    fused = FusedLinearCrossEntropyHead(head, chunk)
    model.set_output_embeddings(fused)
    model.loss_function = functools.partial(_causal_lm_loss, fused)
    return model
