"""Peak memory per GPU: model states per strategy, activations, logits, context and allocator headroom.

Model states follow the ZeRO paper's accounting for mixed precision with Adam (fp32 master weights, gradients and
two moments; DeepSpeed keeps 2-byte weights and gradients beside its fp32 partitions), sharded by the strategy.
Activations follow Korthikanti et al. (2022, "Reducing activation recomputation", section 4) without dropout and
adapted to our blocks: per token and block, the tensors autograd saves are the residual-stream inputs of both norms
(fp32 under autocast), the matmul inputs, Q, K and V, the attention output, and the MLP's hidden tensors (2 under
GELU, 4 under SwiGLU); eager attention adds its saved probabilities (fp32 softmax output and its 2-byte copy), fused
attention only a log-sum-exp per head. Checkpointed blocks keep only their input, plus one block rebuilt at a time.
The head keeps the logits and their fp32 log-softmax (fused CE keeps neither). The CUDA context and the caching
allocator's headroom (fragmentation, rounding, cuBLAS workspaces) come on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain_bench.analysis.perf.compute import recompute_fraction
from pretrain_bench.analysis.perf.workload import Workload, block_gemms

GIB = 2**30
CONTEXT_BYTES = 0.6 * GIB  # CUDA context, kernels and cuBLAS handles of one process (CPU: the interpreter, torch)
ALLOCATOR_HEADROOM = 1.3  # activations × this: caching-allocator fragmentation and transients (docs/prediction.md)
HEAD_BYTES_PER_LOGIT = {"mixed": 14, "fp32": 12}  # logits, fp32 log-softmax, and their gradients at the peak
FOREACH_TEMP_BYTES = 4  # per local parameter: the foreach (non-fused) AdamW's intermediate list
BUCKET_ELEMENTS = 5e8  # DeepSpeed's default reduce / all-gather bucket size


@dataclass(frozen=True)
class Memory:
    states: float  # weights, gradients, optimizer state, buffers
    activations: float
    logits: float
    overhead: float  # context (allocator headroom is applied to the rest)

    @property
    def total(self) -> float:
        return self.states + (self.activations + self.logits) * ALLOCATOR_HEADROOM + self.overhead


def state_bytes(w: Workload) -> float:
    """Weights, gradients and AdamW states on this GPU (ZeRO paper's K = 12 for mixed precision's fp32 copy)."""
    p, n, s = w.params, w.world, w.strategy
    mixed = w.precision != "fp32"
    temp = 0 if w.fused_adamw else FOREACH_TEMP_BYTES
    if s in ("single", "ddp"):
        cast = 2 if mixed else 0  # autocast's cached low-precision weights during the forward
        buckets = 4 if s == "ddp" else 0  # DDP's gradient buckets are copies, not views, by default
        return p * (16 + cast + buckets + temp)
    if s.startswith("fsdp"):
        unsharded = 2 * p if s == "fsdp-grad-op" else 0  # SHARD_GRAD_OP keeps gathered weights until backward
        return p * (16 + temp) / n + unsharded
    low = 2 if mixed else 4  # DeepSpeed's model-dtype weights and gradients
    optimizer = 0 if "offload" in s else (12 + temp) / n * p
    weights = p * low / n if s.startswith("zero3") else p * low
    grads = p * low if s.startswith("zero1") else p * low / n
    if "offload-params" in s or s == "zero3-offload":
        weights = 0
    buckets = 2 * min(BUCKET_ELEMENTS, p) * low
    return weights + grads + optimizer + buckets


def block_bytes_per_token(w: Workload) -> float:
    """Bytes autograd saves per token in one block (see the module docstring)."""
    m = w.model
    h, f = m.hidden_size, m.ffn_size
    kv = (m.num_kv_heads or m.num_heads) * (h // m.num_heads)
    a = w.act_bytes
    residual = 4 if w.precision != "fp32" or a == 4 else a  # norms run in fp32 under autocast
    mlp = 4 * f if block_gemms(m)[2].n == 2 * f else 2 * f
    saved = 2 * residual * h + a * (2 * h + h + 2 * kv + h + mlp)
    t = w.tokens
    if w.attention == "eager":
        saved += m.num_heads * t * (4 + a if w.precision != "fp32" else 2 * a)
    else:
        saved += m.num_heads * 4  # log-sum-exp
    return saved


def activation_bytes(w: Workload) -> float:
    m, tokens = w.model, w.tokens_per_micro_batch
    block = block_bytes_per_token(w) * tokens
    share = recompute_fraction(w)
    if not share:
        return m.num_layers * block
    checkpointed = round(share * m.num_layers)
    residual_in = tokens * m.hidden_size * 4
    return (m.num_layers - checkpointed) * block + checkpointed * residual_in + block  # + one block rebuilt


def logits_bytes(w: Workload) -> float:
    if w.model.is_vision or w.fused_ce:
        return 0.0
    per_logit = HEAD_BYTES_PER_LOGIT["fp32" if w.precision == "fp32" else "mixed"]
    return w.tokens_per_micro_batch * w.model.vocab_size * per_logit


def peak(w: Workload) -> Memory:
    return Memory(state_bytes(w), activation_bytes(w), logits_bytes(w), CONTEXT_BYTES)


def capacity(w: Workload, memory_gib: float | None = None) -> float:
    """Bytes one device offers: the catalogue's memory (or a budget, e.g. a CPU cap)."""
    return (memory_gib if memory_gib is not None else w.gpu.memory_gib) * GIB


def largest_micro_batch(w: Workload, memory_gib: float | None = None, limit: int = 4096) -> int:
    """The largest micro-batch whose predicted peak fits (0: not even one); memory grows with it, so bisect."""
    cap = capacity(w, memory_gib)
    if peak(w.with_(micro_batch=1)).total > cap:
        return 0
    lo, hi = 1, limit + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if peak(w.with_(micro_batch=mid)).total <= cap:
            lo = mid
        else:
            hi = mid
    return lo
