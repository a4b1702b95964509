"""Answers from the model: one prediction with days and cost, every method ranked, and the hardware plan.

A method is strategy × trick set × memory rung, as `search` names them; each is predicted at the largest micro-batch
the memory model lets it fit (a divisor of the per-device batch), and ranked by predicted step time. Days, GPU-days
and costs follow `estimate.py`: cloud = GPU-hours × hourly price, purchase = the share of a 5-year life.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain_bench.analysis.perf import efficiency, memory
from pretrain_bench.analysis.perf.step import StepTime, predict_step
from pretrain_bench.analysis.perf.workload import Workload
from pretrain_bench.config import divisors
from pretrain_bench.spec import gpus

SECONDS_PER_DAY = 86_400
AMORTISATION_YEARS = 5
STRATEGIES_ONE = ("single", "zero2-offload", "zero3-offload")
STRATEGIES_MANY = ("ddp", "zero1", "zero2", "fsdp-grad-op", "zero3", "fsdp", "zero2-offload", "zero3-offload")
RUNGS = ((0, False), (0, True), (2, True), (1, True))  # (checkpoint every k-th block, fused CE), least saved first
NAIVE_RUNGS = ((0, False), (1, False))  # `naive` keeps its baseline rungs, as `search` does
LAYOUTS = ((1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (8, 4))  # (GPUs per node, nodes)


@dataclass(frozen=True)
class Answer:
    step: StepTime
    peak_bytes: float
    capacity_bytes: float
    recipe_steps: int

    @property
    def workload(self) -> Workload:
        return self.step.workload

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.capacity_bytes

    @property
    def days(self) -> float:
        return self.recipe_steps * self.step.step_s / SECONDS_PER_DAY

    @property
    def days_interval(self) -> tuple[float, float]:
        low, high = self.step.interval_s
        return self.recipe_steps * low / SECONDS_PER_DAY, self.recipe_steps * high / SECONDS_PER_DAY

    @property
    def gpu_days(self) -> float:
        return self.days * self.workload.world

    @property
    def cost_cloud_usd(self) -> float | None:
        price = self.workload.gpu.price_per_hour
        return None if price is None else self.gpu_days * 24 * price

    @property
    def cost_purchase_usd(self) -> float | None:
        price = self.workload.gpu.purchase_price
        return None if price is None else self.gpu_days / (AMORTISATION_YEARS * 365) * price

    @property
    def method(self) -> str:
        w = self.workload
        tricks = "naive" if w.precision == "fp32" and w.attention == "eager" else "free-lunch"
        ac = "" if not w.ac_every else "+ac" if w.ac_every == 1 else f"+ac/{w.ac_every}"
        return f"{w.strategy} · {tricks}{'+flce' if w.fused_ce else ''}{ac}"


def answer(w: Workload, eff: efficiency.Efficiency, recipe_steps: int, memory_gib: float | None = None) -> Answer:
    return Answer(predict_step(w, eff), memory.peak(w).total, memory.capacity(w, memory_gib), recipe_steps)


def free_lunch(w: Workload, recipe_precision: str) -> Workload:
    """The trick set `free-lunch`: the recipe's precision, TF32, SDPA, fused AdamW, compile."""
    return w.with_(precision=recipe_precision, tf32=True, attention="sdpa", fused_adamw=True, compile=True)


def naive(w: Workload) -> Workload:
    return w.with_(precision="fp32", tf32=False, attention="eager", fused_adamw=False, compile=False)


def largest_fitting(w: Workload, per_device: int, memory_gib: float | None = None) -> int:
    """The largest divisor of the per-device batch whose predicted peak fits (0: none); peak memory is linear in
    the micro-batch, so two evaluations give it."""
    cap = memory.capacity(w, memory_gib)
    one, two = memory.peak(w.with_(micro_batch=1)).total, memory.peak(w.with_(micro_batch=2)).total
    if one > cap:
        return 0
    slope = two - one
    limit = per_device if slope <= 0 or cap == float("inf") else int((cap - one) / slope) + 1
    return max(d for d in divisors(per_device) if d <= max(1, limit))


def methods(base: Workload, recipe_precision: str, trick_sets: tuple[str, ...] = ("free-lunch",)) -> list[Workload]:
    """Every method for the base's layout, at micro-batch 1 (see `ranked`)."""
    strategies = STRATEGIES_ONE if base.world == 1 else STRATEGIES_MANY
    out, seen = [], set()
    for tricks in trick_sets:
        tricked = free_lunch(base, recipe_precision) if tricks == "free-lunch" else naive(base)
        for every, fused in RUNGS if tricks == "free-lunch" else NAIVE_RUNGS:
            fused = fused and not base.model.is_vision  # no causal-LM head to fuse
            for s in strategies:
                if (tricks, every, fused, s) not in seen:
                    seen.add((tricks, every, fused, s))
                    out.append(tricked.with_(strategy=s, ac_every=every, fused_ce=fused, micro_batch=1, grad_accum=1))
    return out


def ranked(base: Workload, recipe_precision: str, recipe_steps: int, store_dir: str | None = None,
           trick_sets: tuple[str, ...] = ("free-lunch",), memory_gib: float | None = None) -> list[Answer]:
    """Each method at its largest predicted micro-batch, fastest first; methods that fit nothing come last."""
    eff = efficiency.for_gpu(base.gpu, store_dir)
    per_device, rem = divmod(base.model.global_batch, base.world)
    if rem:
        return []
    answers = []
    for w in methods(base, recipe_precision, trick_sets):
        mb = largest_fitting(w, per_device, memory_gib) or 1
        answers.append(answer(w.with_(micro_batch=mb, grad_accum=per_device // mb), eff, recipe_steps, memory_gib))
    return sorted(answers, key=lambda a: (not a.fits, a.step.step_s))


def plan(base: Workload, recipe_precision: str, recipe_steps: int, keys: list[str] | None = None,
         store_dir: str | None = None) -> list[tuple[str, int, int, Answer | None]]:
    """(GPU key, GPUs per node, nodes, best answer or None) over the catalogue's GPUs and LAYOUTS."""
    rows = []
    for key in keys or [k for k in gpus.CATALOGUE if k != "cpu"]:
        gpu = gpus.gpu(key)
        precision = recipe_precision if recipe_precision != "bf16" or gpu.supports_bf16 else "fp16"
        for per_node, nodes in LAYOUTS:
            layout = base.with_(gpu=gpu, gpus_per_node=per_node, nodes=nodes)
            best = next(iter(ranked(layout, precision, recipe_steps, store_dir)), None)
            rows.append((key, per_node, nodes, best))
    return rows
