"""Apply a trick set to the process, the model and the optimizer.

Tricks are the *how* of training: apart from `precision` and `fp8` (which records state), none of them changes the
math beyond the order of floating-point operations (docs/methodology.md has the table). Order matters and follows
torchtitan: model-level swaps (fused linear-CE head, FP8 Linear layers), activation checkpointing, then
torch.compile per block, then the strategy's wrapper (FSDP shards compiled, checkpointed blocks).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from pretrain_bench.config import BenchConfig, RecipeConfig
from pretrain_bench.spec import models
from pretrain_bench.train import fused_ce, speedups

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def apply_process_settings(cfg: BenchConfig) -> None:
    """Process-wide numerics settings: TF32 for fp32 matmuls and convolutions (CUDA only; a no-op on CPU), and the
    SDPA kernel choice."""
    # The legacy switches, not torch 2.9's per-backend `fp32_precision`: once the new API is written, the legacy
    # getters raise ("mix of the legacy and new APIs"), and Inductor's autotuning (max-autotune compile modes) still
    # reads them (select_algorithm.create_precompile_key, kernel/conv.py; pytorch/pytorch#189955).
    torch.set_float32_matmul_precision("high" if cfg.tricks.tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = cfg.tricks.tf32
    speedups.set_sdpa_backend(cfg.tricks.attention_backend)


def build_model(cfg: BenchConfig, compile_blocks: bool) -> nn.Module:
    """The model with the attention kernel, activation checkpointing and (unless the strategy compiles) compile."""
    tr = cfg.tricks
    model = models.build_model(cfg.model, attention=tr.attention)
    if tr.fused_linear_ce:
        fused_ce.apply(model)
    if tr.fp8:
        speedups.convert_fp8(model)
    if tr.activation_checkpointing:
        # Non-reentrant checkpointing composes with FSDP2, DDP's no_sync and torch.compile. Selective: blocks 0, k,
        # 2k, … (transformers' per-layer flags, which checkpoint each block's forward inside FSDP2's hooks).
        if model.supports_gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                                  every_n_layers=tr.ac_every)
        else:
            checkpoint_blocks(models.blocks(model, cfg.model)[::tr.ac_every])
    if tr.compile and compile_blocks:
        # Per-block compile (as torchtitan does): small graphs, no breaks at the HF model's Python glue, and the
        # module tree (hence FSDP wrapping and state-dict names) stays as it was.
        for block in models.blocks(model, cfg.model):
            block.compile(**speedups.compile_kwargs(tr))
    return model


def checkpoint_blocks(blocks: list[nn.Module]) -> None:
    """Checkpoint these blocks' forward, for models whose transformers class has no checkpointing (ConvNeXt). The
    forward is wrapped in place, as transformers' own layers do it, so module names, FSDP2 wrapping and per-block
    compile (which calls `forward` through `_call_impl`) see the same tree."""
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases and norm gains are not decayed (as GPT-NeoX and nanoGPT do)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:  # a ZeRO-3 partitioned parameter's own shape is a placeholder's; ds_shape is its shape
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: RecipeConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr,
                             betas=(recipe.beta1, recipe.beta2), eps=recipe.eps,
                             fused=True if fused else None, foreach=False if fused else None)


def lr_lambda(recipe: RecipeConfig):
    """Linear warm-up to the peak, then cosine decay to min_lr_ratio × peak at the recipe's last step."""
    warmup = max(1, round(recipe.warmup_ratio * recipe.steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, recipe.steps - warmup))
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: RecipeConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe))
