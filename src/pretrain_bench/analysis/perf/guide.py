"""The prediction's help to `search`: where each method's micro-batch probes start, and which methods are worth
measuring at all (those predicted within a margin of the predicted best)."""

from __future__ import annotations

from dataclasses import dataclass

from pretrain_bench.analysis.perf import efficiency, memory
from pretrain_bench.analysis.perf.step import predict_step
from pretrain_bench.analysis.perf.workload import from_config
from pretrain_bench.config import BenchConfig, ConfigError

MARGIN = 0.25  # above the model's p90 error on published rows (13 %): a method this much slower is not the best


@dataclass(frozen=True)
class Guess:
    micro_batch: int  # the largest candidate size predicted to fit (0: none)
    step_s: float | None  # predicted optimizer step at that size (at size 1 when none fits); None: speed unknown


def guess(cfg: BenchConfig, sizes: list[int]) -> Guess | None:
    """The prediction for `cfg`'s method over the candidate micro-batch `sizes`; None where the model cannot tell
    (a family it does not model, a CPU with neither a calibration nor a memory budget). Without a known memory
    size every size fits; without a calibration (a CPU) only the size is predicted."""
    try:
        w = from_config(cfg)
    except ConfigError:
        return None
    cap = memory.capacity(w)
    fitting = max((s for s in sizes if memory.peak(w.with_(micro_batch=s)).total <= cap), default=0)
    size = fitting or 1
    per_device = cfg.model.global_batch // w.world
    try:
        step_s = predict_step(w.with_(micro_batch=size, grad_accum=per_device // size),
                              efficiency.for_gpu(w.gpu, cfg.store)).step_s
    except ConfigError:  # no peak FLOP/s or bandwidth: a CPU before `calibrate`
        if cap == float("inf"):
            return None
        step_s = None
    return Guess(fitting, step_s)


def beyond_margin(guesses: dict, margin: float = MARGIN) -> dict:
    """{method: reason} for the methods predicted to fit but slower than the predicted best by more than `margin`."""
    fitting = {m: g for m, g in guesses.items() if g is not None and g.micro_batch and g.step_s is not None}
    if not fitting:
        return {}
    best = min(fitting, key=lambda m: fitting[m].step_s)
    limit = fitting[best].step_s * (1 + margin)
    return {m: f"predicted step {g.step_s:.3g} s > {1 + margin:.2f} × the predicted best ({fitting[best].step_s:.3g} s)"
            for m, g in fitting.items() if g.step_s > limit}
