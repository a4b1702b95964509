"""Time per optimizer step = micro-batches' compute + exposed communication + the optimizer and per-step work."""

from __future__ import annotations

from dataclasses import dataclass, field

from pretrain_bench.analysis.perf import comms, compute, efficiency
from pretrain_bench.analysis.perf.efficiency import Efficiency
from pretrain_bench.analysis.perf.workload import Workload
from pretrain_bench.spec import models

ADAMW_BYTES = {True: 28, False: 44}  # per parameter: fused reads p, g, m, v and writes p, m, v (fp32); foreach: more
CLIP_BYTES = 12  # gradient norm (read) and scaling (read + write)
ACCUMULATE_BYTES = 8  # per parameter per extra micro-batch: read and write the accumulated fp32 gradient
CAST_BYTES = 6  # autocast / FSDP param_dtype: read fp32 weights, write bf16 copies, per forward


@dataclass(frozen=True)
class StepTime:
    workload: Workload
    step_s: float
    compute: compute.Compute  # one micro-batch
    comm_exposed_s: float
    optimizer_s: float
    efficiency: Efficiency = field(repr=False)

    @property
    def interval_s(self) -> tuple[float, float]:
        """The fit's 10th-90th percentile of measured / predicted applied to this prediction."""
        return self.step_s * self.efficiency.error_low, self.step_s * self.efficiency.error_high

    @property
    def units_per_s(self) -> float:
        return self.workload.units_per_step / self.step_s

    @property
    def units_per_s_per_gpu(self) -> float:
        return self.units_per_s / self.workload.world

    @property
    def mfu(self) -> float | None:
        w = self.workload
        peak = w.gpu.peak(w.peak_dtype)
        return models.flops_per_token(w.model) * self.units_per_s_per_gpu / peak if peak else None


def local_params(w: Workload) -> float:
    """Parameters whose optimizer state and update live on this GPU."""
    return w.params / w.world if w.sharded else w.params


def optimizer_seconds(w: Workload, eff: Efficiency) -> float:
    """The GPU's memory-bound per-step and per-micro-batch parameter work (the host's, under offload, is in comms)."""
    bandwidth = efficiency.bandwidth(w, eff) * eff.memory
    local = local_params(w)
    per_step = 0.0 if "offload" in w.strategy else local * (ADAMW_BYTES[w.fused_adamw] + CLIP_BYTES)
    grads = w.params / w.world if w.strategy.startswith(("fsdp", "zero2", "zero3")) else w.params
    per_step += (w.grad_accum - 1) * grads * ACCUMULATE_BYTES
    if w.precision != "fp32":  # weights cast to the compute dtype at each forward (FSDP: the local shard only)
        forwards = w.grad_accum * (1 + compute.recompute_fraction(w))
        per_step += forwards * (local if w.sharded else w.params) * CAST_BYTES
    return per_step / bandwidth


def predict_step(w: Workload, eff: Efficiency) -> StepTime:
    mb = compute.micro_batch(w, eff)
    c = comms.per_step(w, eff)
    exposed = comms.exposed(c, mb.total_s, w.model.num_layers, w.grad_accum, overlap=w.gpu.arch != "cpu")
    opt = optimizer_seconds(w, eff)
    return StepTime(w, w.grad_accum * mb.total_s + exposed + opt, mb, exposed, opt, eff)
