"""Method search: for one (model, hardware), the fastest method that fits, found without brute force.

A method is strategy × trick set × memory rung. The rungs trade speed for memory, each saving more than the one
before: none → fused linear-CE (the logits never exist) → + checkpointing of every 2nd block → + checkpointing of
every block (`naive` keeps its own two rungs, none → checkpointing, so that the baseline stays "nothing on"). For
each method that survives pruning, the largest
micro-batch that fits is found with cheap probes (2 optimizer steps at accumulation ≤ 2 in fresh processes: peak
memory does not depend on how many micro-batches are accumulated), then the full recipe step is measured once at that
micro-batch. The methods within a few percent of the best are then measured again in alternation and ranked on the
median (confirm.py). Every probe and measurement goes through the store, so a repeated or interrupted search reuses
them.

Pruning rules (each pruned method is reported with its rule):
- R1 one device: sharding only with offload (sharding over one device saves nothing);
- R2 several devices: `single` cannot use them;
- R3 bf16 needs Ampere or newer: trick sets using the recipe's bf16 are dropped on older GPUs;
- R4 memory rungs (fused linear-CE, activation checkpointing) only buy micro-batch size: skipped when a lower rung of
  the same method fits the whole per-device batch (accumulation 1);
- R5 more sharding only buys micro-batch size: a strategy is skipped when a less-sharded one with the same tricks
  already fits the whole per-device batch;
- R6 offload only when nothing fits on the GPUs: offload strategies are skipped once any non-offload method fits;
- R7 on GPUs, `naive` (fp32, eager attention, no compile) is dominated by `free-lunch`: skipped once free-lunch fits
  with the same strategy (more memory per sequence and fewer FLOP/s);
- R8 a rung that fits no larger micro-batch than the rung below is not measured: at the same micro-batch and
  accumulation it only adds work (recompute, chunked head), so it cannot be faster by more than noise;
- R9 (with `search.prune=predicted`) a method the performance model (analysis/perf) predicts to fit but slower than
  its predicted best by more than a margin is not measured;
- R10 a method whose config this hardware rejects (DeepSpeed's fp16 on a CPU, FP8 without its package) is reported
  with the validation error instead of ending the search.
With `search.prune=predicted` each method's probes also start at its predicted largest micro-batch (then its
neighbour: one or two probes when the prediction is right); `rules` is R1-R8 alone, `none` measures every method
that can run (R1-R3 and R10 only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pretrain_bench import config
from pretrain_bench.analysis.perf import guide
from pretrain_bench.bench import confirm
from pretrain_bench.bench.runner import Runner
from pretrain_bench.config import BenchConfig
from pretrain_bench.spec import gpus, models

SPEED_ORDER = ("single", "ddp", "zero1", "zero2", "fsdp-grad-op", "zero3", "fsdp", "zero2-offload", "zero3-offload")
MEMORY_RANK = {"single": 0, "ddp": 0, "zero1": 1, "zero2": 2, "fsdp-grad-op": 2, "zero3": 3, "fsdp": 3,
               "zero2-offload": 4, "zero3-offload": 5}
OFFLOAD = ("zero2-offload", "zero3-offload")
SHARDED = ("zero1", "zero2", "zero3", "fsdp", "fsdp-grad-op")
METHOD_SETS = {"naive": ("naive",), "free-lunch": ("free-lunch",), "all": ("free-lunch", "naive")}
RULES = {
    "R1": "one device: nothing to distribute or shard (only single or offload)",
    "R2": "several devices: `single` cannot use them",
    "R3": "bf16 needs an Ampere or newer GPU",
    "R4": "memory rungs only buy micro-batch size; a lower rung fits the whole per-device batch",
    "R5": "more sharding only buys micro-batch size; a less-sharded strategy fits the whole per-device batch",
    "R6": "offload only when nothing fits on the GPUs, and a non-offload method fits",
    "R7": "on GPUs naive is dominated by free-lunch, which fits with this strategy",
    "R8": "this rung fits no larger micro-batch than the rung below: same batch, more work",
    "R9": "the performance model predicts it slower than the predicted best by more than the margin",
    "R10": "this hardware cannot run the method (its config fails validation)",
}
PRUNE_MODES = ("predicted", "rules", "none")
# Memory rungs (activation checkpointing, checkpoint every k-th block, fused linear-CE), least memory saved first.
RUNGS = ((False, 1, False), (False, 1, True), (True, 2, True), (True, 1, True))
NAIVE_RUNGS = ((False, 1, False), (True, 1, False))


def rungs(tricks: str, family: str) -> tuple[tuple[bool, int, bool], ...]:
    """The rungs a trick set climbs on a model family: without a causal LM's output head, the same rungs without
    fused linear-CE."""
    ladder = NAIVE_RUNGS if tricks == "naive" else RUNGS
    if family in models.CAUSAL_LM_FAMILIES:
        return ladder
    return tuple(dict.fromkeys((ac, every, False) for ac, every, _ in ladder))

ASSUMED_MFU = 0.35  # for the plan's time estimate only
PROBE_OVERHEAD_S = {"cpu": 10.0, "gpu": 45.0}  # process start, model build, compile: for the plan's estimate only


@dataclass(frozen=True)
class Method:
    strategy: str  # a configs/strategy preset
    tricks: str  # a configs/tricks preset
    ac: bool  # activation checkpointing
    ac_every: int = 1  # checkpoint every k-th block
    flce: bool = False  # fused linear + cross-entropy head
    family: str = "gpt_neox"  # the model's: which rungs exist

    @property
    def rung(self) -> int:
        return rungs(self.tricks, self.family).index((self.ac, self.ac_every, self.flce))

    def below(self) -> Method | None:
        """The same strategy and tricks one memory rung lower (None on the lowest)."""
        if not self.rung:
            return None
        return Method(self.strategy, self.tricks, *rungs(self.tricks, self.family)[self.rung - 1], self.family)

    @property
    def label(self) -> str:
        ac = ("+ac" if self.ac_every == 1 else f"+ac/{self.ac_every}") if self.ac else ""
        return f"{self.strategy} · {self.tricks}{'+flce' if self.flce else ''}{ac}"

    def overrides(self) -> list[str]:
        return [f"strategy={self.strategy}", f"tricks={self.tricks}",
                f"tricks.activation_checkpointing={str(self.ac).lower()}", f"tricks.ac_every={self.ac_every}",
                f"tricks.fused_linear_ce={str(self.flce).lower()}"]


@dataclass
class Outcome:
    method: Method
    status: str  # measured | pruned | oom (nothing fits) | error
    micro_batch: int | None = None
    record: dict | None = None
    reason: str = ""
    probes: int = 0


@dataclass
class SearchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed_s: float = 0.0
    confirmation: confirm.Confirmation | None = None  # the re-measured contenders (confirm.py)

    def measured(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.record and o.record.ok and o.record["valid"]]

    @property
    def best(self) -> Outcome | None:
        """The confirmed winner (its latest run as the record), else the fastest single measurement."""
        if self.confirmation and (w := self.confirmation.winner):
            return Outcome(w.method, "measured", micro_batch=w.micro_batch, record=w.runs[-1],
                           reason=f"median of {len(w.runs)} alternated runs")
        return max(self.measured(), key=lambda o: o.record.tokens_per_s, default=None)


def base_config(overrides: list[str]) -> BenchConfig:
    """The model and hardware of a search, composed with a strategy and micro-batch valid on any layout."""
    return config.compose([*overrides, "strategy=zero2-offload", "micro_batch=1"])


def candidates(cfg: BenchConfig, methods: str,
               strategies: list[str] | None = None) -> tuple[list[Method], list[Outcome]]:
    """Every method in the space, ordered by expected speed, minus the statically pruned ones (R1-R3)."""
    if methods not in METHOD_SETS:
        raise config.ConfigError("methods", f"{methods!r} is not allowed; allowed values: {', '.join(METHOD_SETS)}")
    unknown = sorted(set(strategies or ()) - set(SPEED_ORDER))
    if unknown:
        raise config.ConfigError("strategies", f"unknown {unknown}; allowed values: {', '.join(SPEED_ORDER)}")
    space = [Method(s, t, *rung, cfg.model.family) for t in METHOD_SETS[methods] for rung in rungs(t, cfg.model.family)
             for s in SPEED_ORDER if not strategies or s in strategies]
    space.sort(key=lambda m: (m.strategy in OFFLOAD, METHOD_SETS[methods].index(m.tricks), m.rung,
                              SPEED_ORDER.index(m.strategy)))
    kept, pruned = [], []
    spec = gpus.gpu(cfg.hardware.gpu)
    for m in space:
        rule = None
        if cfg.world_size == 1 and m.strategy in (*SHARDED, "ddp"):
            rule = "R1"
        elif cfg.world_size > 1 and m.strategy == "single":
            rule = "R2"
        elif m.tricks != "naive" and cfg.model.recipe.precision == "bf16" and spec.arch not in ("cpu", "unknown") \
                and not spec.supports_bf16:
            rule = "R3"
        (pruned.append(Outcome(m, "pruned", reason=f"{rule}: {RULES[rule]}")) if rule else kept.append(m))
    return kept, pruned


def micro_batches(cfg: BenchConfig) -> list[int]:
    """Micro-batch sizes that divide the per-device batch (any divisor, not only powers of two)."""
    return config.divisors(cfg.model.global_batch // cfg.world_size)


def probe_config(cfg: BenchConfig) -> BenchConfig:
    """The same method at accumulation ≤ 2 for 2 steps: enough to reach peak memory, cheap at any recipe batch."""
    accum = min(2, cfg.grad_accum)
    model = dataclasses.replace(cfg.model, global_batch=cfg.world_size * cfg.micro_batch * accum)
    return dataclasses.replace(cfg, model=model, warmup_steps=1, steps=1)


def estimate_seconds(cfg: BenchConfig, n_methods: int) -> float | None:
    """Rough search time for the plan: probes per method (binary search) plus one full measurement each."""
    if cfg.hardware.gpu == "cpu":
        return None
    spec = gpus.gpu(cfg.hardware.gpu)
    dtype = gpus.peak_dtype(cfg.model.recipe.precision, tf32=True)
    tokens = cfg.model.global_batch * cfg.model.seq_len
    step_s = tokens * models.flops_per_token(cfg.model) / (spec.peak(dtype) * cfg.world_size * ASSUMED_MFU)
    probes = math.ceil(math.log2(len(micro_batches(cfg)))) + 1
    per_method = probes * PROBE_OVERHEAD_S["gpu"] + PROBE_OVERHEAD_S["gpu"] + (cfg.warmup_steps + cfg.steps) * step_s
    return n_methods * per_method


class Search:
    def __init__(self, runner: Runner, overrides: list[str], base: BenchConfig,
                 on_outcome: Callable[[Outcome], None] | None = None, prune: str = "rules",
                 repeats: int | None = None):
        """`base` is the search space's model and hardware (see `base_config`); `overrides` recreate it per method;
        `prune` one of PRUNE_MODES; `repeats`: alternated re-measurements of each contender before ranking (0: rank
        single measurements; default: the config's `search_repeats`)."""
        if prune not in PRUNE_MODES:
            raise config.ConfigError("search.prune", f"{prune!r} is not allowed; allowed values: "
                                                     f"{', '.join(PRUNE_MODES)}")
        self.runner, self.overrides, self.base, self.prune = runner, list(overrides), base, prune
        self.repeats = base.search_repeats if repeats is None else repeats
        self.on_outcome = on_outcome or (lambda o: None)
        self.fitted: dict[Method, int] = {}  # largest fitting micro-batch per method
        self.guesses: dict[Method, guide.Guess | None] = {}  # the performance model's, with prune=predicted

    def screen(self, methods: list[Method]) -> tuple[list[Method], list[Outcome]]:
        """Before anything runs: the methods whose config this hardware rejects (R10, e.g. DeepSpeed fp16 on a CPU),
        then with prune=predicted the methods R9 prunes. Returns (methods to search, pruned outcomes)."""
        invalid = {}
        for m in methods:
            try:
                self.config(m, 1)
            except config.ConfigError as e:
                invalid[m] = str(e)
        kept, slow = self.predicted([m for m in methods if m not in invalid])
        return kept, [Outcome(m, "pruned", reason=f"R10: {RULES['R10']}: {e}") for m, e in invalid.items()] + slow

    def predicted(self, methods: list[Method]) -> tuple[list[Method], list[Outcome]]:
        """With prune=predicted: each method's prediction (kept in `guesses`) and the methods R9 prunes."""
        if self.prune != "predicted":
            return methods, []
        sizes = micro_batches(self.base)
        self.guesses = {m: guide.guess(self.config(m, 1), sizes) for m in methods}
        slow = guide.beyond_margin(self.guesses)
        return ([m for m in methods if m not in slow],
                [Outcome(m, "pruned", reason=f"R9: {RULES['R9']}: {slow[m]}") for m in methods if m in slow])

    def config(self, method: Method, micro_batch: int) -> BenchConfig:
        return config.compose([*self.overrides, *method.overrides(), f"micro_batch={micro_batch}"])

    def fits(self, method: Method, micro_batch: int) -> tuple[bool, dict]:
        probe = self.runner.measure(probe_config(self.config(method, micro_batch)), kind="probe")
        return probe["status"] == "ok", probe

    def largest_fitting(self, method: Method, sizes: list[int], known_fit: int,
                        guess: int = 0) -> tuple[int | None, int, dict | None]:
        """Binary search over `sizes` above `known_fit`, trying the largest first (it often fits at once), or first
        the predicted size `guess` and then its neighbour towards the answer (right: two probes).

        Returns (largest fitting size or None, probes run, the failed probe record if a probe broke for a reason
        other than memory).
        """
        lo = sizes.index(known_fit) if known_fit in sizes else -1  # sizes[:lo + 1] fit
        hi = len(sizes)  # sizes[hi:] do not fit
        guided = guess in sizes and lo < sizes.index(guess)
        probes, candidate = 0, sizes.index(guess) if guided else len(sizes) - 1
        while lo < hi - 1:
            ok, probe = self.fits(method, sizes[candidate])
            probes += 1
            if ok:
                lo = candidate
            elif probe["status"] == "oom":
                hi = candidate
            else:
                return None, probes, probe
            candidate = (lo + 1 if ok else hi - 1) if guided and probes == 1 else (lo + hi) // 2
        return (sizes[lo] if lo >= 0 else None), probes, None

    def dynamic_rule(self, m: Method, full: int) -> str | None:
        if self.prune == "none":
            return None
        for o, fit in self.fitted.items():
            # o fits the whole per-device batch and needs at least as much memory as m: m cannot fit more.
            if fit == full and o.tricks == m.tricks and o.rung <= m.rung and MEMORY_RANK[o.strategy] <= MEMORY_RANK[
                    m.strategy]:
                return "R4" if o.strategy == m.strategy else "R5"
        if m.strategy in OFFLOAD and any(o.strategy not in OFFLOAD for o in self.fitted):
            return "R6"
        if m.tricks == "naive" and self.base.hardware.gpu != "cpu" and any(
                o.strategy == m.strategy and o.tricks == "free-lunch" for o in self.fitted):
            return "R7"
        return None

    def known_fit(self, m: Method) -> int:
        """The largest micro-batch the rung below fitted (0 if none): a lower bound, as this rung saves more memory."""
        below = m.below()
        return self.fitted.get(below, 0) if below else 0

    def run(self, methods: list[Method], pruned: list[Outcome]) -> SearchResult:
        started = time.monotonic()
        result = SearchResult()
        sizes = micro_batches(self.base)
        for outcome in pruned:
            result.outcomes.append(outcome)
            self.on_outcome(outcome)
        for m in methods:
            outcome = self.search_method(m, sizes)
            result.outcomes.append(outcome)
            self.on_outcome(outcome)
        if self.repeats:
            contenders = confirm.candidates([(o.method, o.micro_batch, o.record) for o in result.measured()], sizes)
            result.confirmation = confirm.confirm(
                contenders, lambda m, mb: self.runner.measure(self.config(m, mb), fresh=True),
                lambda m, mb: self.runner.history(self.config(m, mb)), self.repeats)
        result.elapsed_s = time.monotonic() - started
        return result

    def search_method(self, m: Method, sizes: list[int]) -> Outcome:
        if rule := self.dynamic_rule(m, sizes[-1]):
            return Outcome(m, "pruned", reason=f"{rule}: {RULES[rule]}")
        known = self.known_fit(m)
        guessed = self.guesses.get(m)
        size, probes, failure = self.largest_fitting(m, sizes, known, guessed.micro_batch if guessed else 0)
        if failure is not None:
            return Outcome(m, "error", record=failure, probes=probes,
                           reason=f"probe {failure['status']}: {failure['error']}")
        if size is None:
            return Outcome(m, "oom", probes=probes, reason="micro-batch 1 does not fit")
        self.fitted[m] = size
        if m.rung and size == known and self.prune != "none":
            return Outcome(m, "pruned", micro_batch=size, probes=probes, reason=f"R8: {RULES['R8']}")
        measured = self.runner.measure(self.config(m, size))
        return Outcome(m, "measured", micro_batch=size, record=measured, probes=probes,
                       reason="" if measured["status"] == "ok" else f"{measured['status']}: {measured['error']}")
