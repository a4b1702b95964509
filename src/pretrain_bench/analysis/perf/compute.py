"""Compute time of one micro-batch on one GPU: matmuls, attention, memory-bound work, recomputation.

Matmuls run at a fraction of the dense peak that shrinks for narrow shapes (x / (x + width) per dimension, the
tile and wave quantisation of GEMM kernels); fused attention at its own fraction, on the causal half of the score
matrix, with a backward of 2.5 forward-equivalents (FlashAttention recomputes the scores); eager attention
materialises the scores and pays their bytes. Norms, activations, residuals, softmax, cross-entropy and the
optimizer are memory-bound: bytes moved over the achieved memory bandwidth. Element counts per token are counts of
the tensors each kernel reads and writes in an unfused (eager) block; torch.compile fuses about half of them away.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain_bench.analysis.perf import efficiency
from pretrain_bench.analysis.perf.efficiency import Efficiency
from pretrain_bench.analysis.perf.workload import Gemm, Workload, block_gemms, head_gemm

FUSED_ATTENTION_BACKWARD = 2.5  # FlashAttention backward: 5 matmuls of the score size against 2 in the forward
# Reads + writes of each attention score element in the compute dtype, fwd + bwd, when the scores are materialised:
# scale, mask, softmax in fp32 under autocast and the cast back, then their backward (~58 bytes at 2 bytes each).
# torch.compile is not assumed to fuse this path away (the Languini rows, compiled, agree).
EAGER_SCORE_PASSES = 30
CE_BYTES_PER_LOGIT = (30, 6)  # per vocabulary entry per token: full logits with fp32 softmax, or chunked fused CE
KERNELS_PER_BLOCK = (75, 30)  # kernels per block per micro-batch, fwd + bwd: (eager, compiled)


@dataclass(frozen=True)
class Compute:
    matmul_s: float
    attention_s: float
    memory_s: float
    recompute_s: float

    @property
    def total_s(self) -> float:
        return self.matmul_s + self.attention_s + self.memory_s + self.recompute_s


def _saturation(x: float, width: float) -> float:
    return x / (x + width)


def gemm_seconds(g: Gemm, rows: int, w: Workload, eff: Efficiency) -> float:
    """Forward time of one weight matmul over `rows` token rows (backward: twice this, same shapes)."""
    rate = efficiency.peak(w, eff) * eff.matmul
    rate *= _saturation(g.k, eff.width) * _saturation(g.n, eff.width) * _saturation(rows, eff.width)
    return 2.0 * rows * g.k * g.n / rate


def attention_seconds(w: Workload, eff: Efficiency) -> tuple[float, float]:
    """(forward, backward) of the score-side attention of one block: QKᵀ, softmax, AV."""
    m, t = w.model, w.tokens
    flops = 4.0 * w.micro_batch * t * t * m.hidden_size  # full score matrix, forward
    head_dim = m.hidden_size // m.num_heads
    if w.attention != "eager":
        rate = efficiency.peak(w, eff) * eff.attention * _saturation(head_dim, eff.width)
        causal = 0.5 if not m.is_vision and m.family != "roberta" else 1.0
        fwd = flops * causal / rate
        return fwd, fwd * FUSED_ATTENTION_BACKWARD
    rate = efficiency.peak(w, eff) * eff.matmul * _saturation(head_dim, eff.width) * _saturation(t, eff.width)
    scores = w.micro_batch * m.num_heads * t * t * EAGER_SCORE_PASSES * w.act_bytes
    mem = scores / (efficiency.bandwidth(w, eff) * eff.memory)
    return flops / rate + mem / 3, 2 * flops / rate + 2 * mem / 3


def elementwise_bytes_per_token(w: Workload) -> float:
    """Bytes that norms, residuals, activations, rotary and layout copies of one block move per token, fwd + bwd:
    forward 16·d + 3·(MLP up width) elements, backward twice that; compiled blocks fuse half of it away."""
    m = w.model
    up = block_gemms(m)[2].n
    elements = 3 * (16 * m.hidden_size + 3 * up)
    return elements * w.act_bytes * (0.5 if w.compile else 1.0)


def head_bytes_per_token(w: Workload) -> float:
    """Logits and cross-entropy per token (fused CE never materialises the logits)."""
    return 0.0 if w.model.is_vision else w.model.vocab_size * CE_BYTES_PER_LOGIT[w.fused_ce]


def recompute_fraction(w: Workload) -> float:
    """Share of the blocks whose forward runs twice under activation checkpointing."""
    if not w.ac_every:
        return 0.0
    layers = w.model.num_layers
    return len(range(0, layers, w.ac_every)) / layers


def micro_batch(w: Workload, eff: Efficiency) -> Compute:
    """Seconds of one micro-batch's forward and backward on one GPU (no communication, no optimizer)."""
    m, rows = w.model, w.tokens_per_micro_batch
    layers = m.num_layers
    block_fwd = sum(gemm_seconds(g, rows, w, eff) for g in block_gemms(m))
    head = head_gemm(m)
    head_fwd = gemm_seconds(head, rows, w, eff) if head else 0.0
    att_fwd, att_bwd = attention_seconds(w, eff)
    bandwidth = efficiency.bandwidth(w, eff) * eff.memory
    elementwise = elementwise_bytes_per_token(w) * rows / bandwidth
    memory = layers * elementwise + head_bytes_per_token(w) * rows / bandwidth
    share = recompute_fraction(w)
    recompute = layers * share * (block_fwd + att_fwd + elementwise / 3)
    if w.selective_ac:  # torchtitan's op-level policy keeps every other matmul output and recomputes the rest
        recompute += layers * (block_fwd / 2 + elementwise / 3)
    gpu = Compute(3 * (layers * block_fwd + head_fwd), layers * (att_fwd + att_bwd), memory, recompute)
    floor = layers * KERNELS_PER_BLOCK[w.compile] * (1 + share / 3) * eff.launch_us * 1e-6
    if gpu.total_s >= floor:
        return gpu
    scale = floor / gpu.total_s  # launch-bound: every part waits for the CPU alike
    return Compute(gpu.matmul_s * scale, gpu.attention_s * scale, gpu.memory_s * scale, gpu.recompute_s * scale)
