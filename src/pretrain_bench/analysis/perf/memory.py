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
from pretrain_bench.analysis.perf.workload import Workload

GIB = 2**30
CONTEXT_BYTES = 0.6 * GIB  # CUDA context, kernels and cuBLAS handles of one process
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
    offload = "offload" in s and w.gpu.arch != "cpu"  # on a CPU the offloaded states stay in the process's memory
    optimizer = 0 if offload else (12 + temp) / n * p
    weights = p * low / n if s.startswith("zero3") else p * low
    grads = p * low if s.startswith("zero1") else p * low / n
    if offload and ("offload-params" in s or s == "zero3-offload"):
        weights = 0
    buckets = 2 * min(BUCKET_ELEMENTS, p) * low
    return weights + grads + optimizer + buckets


def _residual_bytes(w: Workload) -> int:
    return 4  # the residual stream: fp32 parameters' outputs, and norms run in fp32 under autocast


# Hidden-sized tensors the attention keeps per token, with the output projection's input, read from what autograd
# saves in transformers' blocks: fused kernels keep Q, K, V and the output (GPT-NeoX also its rotated Q and K beside
# the fused QKV buffer, and a copy for the dense layer); eager attention keeps per-head copies of Q, K and V (Llama's
# K and V repeated to every head) and the output projection's input.
FUSED_ATTENTION_TENSORS = {"gpt_neox": 7, "gpt2": 4, "roberta": 4, "vit": 4}
MLP_TENSORS = {"llama": 4, "gpt_neox": 2}  # of the MLP width: SwiGLU keeps gate, up, SiLU and product; GELU 2
GELU_TANH_TENSORS = 5  # GPT-2's tanh GELU written out in elementwise ops (2 once compiled)


def _attention_bytes_per_token(w: Workload) -> float:
    m = w.model
    h, a = m.hidden_size, w.act_bytes
    kv = (m.num_kv_heads or m.num_heads) * (h // m.num_heads)
    if w.attention == "eager":  # + the probabilities: fp32 softmax output and its low-precision copy under autocast
        probs = m.num_heads * w.tokens * (4 + a if w.precision != "fp32" else a)
        return 4 * h * a + probs
    lse = 4 * m.num_heads
    if m.family == "llama":
        return (2 * h + 2 * kv) * a + lse
    return FUSED_ATTENTION_TENSORS[m.family] * h * a + lse


def block_bytes_per_token(w: Workload) -> float:
    """Bytes autograd saves per token in one block: residual inputs (one under GPT-NeoX's parallel residual), the
    norms' outputs (RMSNorm also its fp32 normalised input), the attention's tensors and the MLP's."""
    m = w.model
    h, a = m.hidden_size, w.act_bytes
    residuals = 1 if m.family == "gpt_neox" and m.parallel_residual else 2
    saved = residuals * _residual_bytes(w) * h + 2 * a * h
    if m.family == "llama":
        saved += 2 * 4 * h
    mlp = GELU_TANH_TENSORS if m.family == "gpt2" and not w.compile else MLP_TENSORS.get(m.family, 2)
    return saved + _attention_bytes_per_token(w) + mlp * m.ffn_size * a


def activation_bytes(w: Workload) -> float:
    m, tokens = w.model, w.tokens_per_micro_batch
    block = block_bytes_per_token(w) * tokens
    share = recompute_fraction(w)
    if not share:
        return m.num_layers * block
    checkpointed = round(share * m.num_layers)
    residual_in = tokens * m.hidden_size * 4
    return (m.num_layers - checkpointed) * block + checkpointed * residual_in + block  # + one block rebuilt


def head_saved_bytes(w: Workload) -> float:
    """What autograd keeps for the head and loss: the final norm's input, the head's input and the fp32
    log-softmax; fused CE keeps instead the gradients it computed in the forward (hidden-sized, and one fp32
    head-weight gradient)."""
    m, tokens = w.model, w.tokens_per_micro_batch
    final = tokens * m.hidden_size * (_residual_bytes(w) + w.act_bytes + (4 if m.family == "llama" else 0))
    if m.is_vision:
        return final
    if w.fused_ce:
        return final + tokens * m.hidden_size * w.act_bytes + m.vocab_size * m.hidden_size * 4
    return final + tokens * m.vocab_size * 4


def saved_bytes(w: Workload) -> float:
    """All tensors autograd saves in one forward, outside checkpointed blocks (what saved_tensors_hooks see)."""
    stored = w.model.num_layers - round(recompute_fraction(w) * w.model.num_layers)
    return stored * block_bytes_per_token(w) * w.tokens_per_micro_batch + head_saved_bytes(w)


def logits_bytes(w: Workload) -> float:
    """The head's share of the peak: logits, their fp32 softmax and gradients (fused CE: its saved gradients and
    one chunk's logits, about hidden-sized)."""
    m, tokens = w.model, w.tokens_per_micro_batch
    if m.is_vision:
        return 0.0
    if w.fused_ce:
        return tokens * m.hidden_size * (w.act_bytes + 4) + m.vocab_size * m.hidden_size * 4
    per_logit = HEAD_BYTES_PER_LOGIT["fp32" if w.precision == "fp32" else "mixed"]
    return tokens * m.vocab_size * per_logit


def peak(w: Workload) -> Memory:
    """A CPU has no device context: its budget (hardware.memory_gib) counts the process's growth from just before
    the model is built, when the interpreter and torch are already resident, so no overhead comes on top."""
    return Memory(state_bytes(w), activation_bytes(w), logits_bytes(w), 0.0 if w.gpu.arch == "cpu" else CONTEXT_BYTES)


def capacity(w: Workload, memory_gib: float | None = None) -> float:
    """Bytes one device offers: the catalogue's memory, or a budget (e.g. a CPU cap); unknown (a CPU): unlimited."""
    gib = memory_gib if memory_gib is not None else w.gpu.memory_gib
    return gib * GIB if gib else float("inf")


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
