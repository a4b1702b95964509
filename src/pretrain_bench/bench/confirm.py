"""Winners that survive a re-measure: the search's single measurements are re-run in alternation before ranking.

Taking the maximum of single measurements picks the method whose one run was luckiest (the winner's curse). So the
methods within `NEAR` of the best single figure, and the best one at the next smaller micro-batch (near the memory
limit the CUDA allocator's free-and-retry can make the largest micro-batch slower), are measured again in fresh
processes, in alternation (A, B, C, A, B, C, …: a slow phase of the machine hits all of them), `search_repeats`
(default 3) times each, and ranked on the median of those runs. The winner is reported with its spread (lowest and
highest run), and when the runner-up's best run reaches the winner's worst the two are called within noise.
Re-measurements are ordinary store records of the cell, so an interrupted search resumes them and estimates use
them as repeated runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NEAR = 0.05  # re-measure methods within 5 % of the best single measurement


def speed(r: dict) -> float:
    return r["throughput"]["tokens_per_s"]


@dataclass
class Contender:
    method: Any  # search.Method
    micro_batch: int
    prior: int = 1  # the search's own measurement of this cell, which comes before the alternated runs
    runs: list[dict] = field(default_factory=list)  # the alternated re-measurements that finished ok and valid

    @property
    def label(self) -> str:
        return f"{self.method.label} at micro-batch {self.micro_batch}"

    @property
    def median(self) -> float:
        return statistics.median(map(speed, self.runs))

    @property
    def spread(self) -> tuple[float, float]:
        return min(map(speed, self.runs)), max(map(speed, self.runs))


@dataclass
class Confirmation:
    ranked: list[Contender]  # fastest median first; only contenders with at least one ok run

    @property
    def winner(self) -> Contender | None:
        return self.ranked[0] if self.ranked else None

    @property
    def within_noise(self) -> bool:
        """The runner-up's best run reaches the winner's worst: the order of the two is not established."""
        return len(self.ranked) > 1 and self.ranked[1].spread[1] >= self.ranked[0].spread[0]

    def summary(self) -> dict:
        return {"repeats": [{"method": c.label, "median_tokens_per_s": c.median, "min": c.spread[0],
                             "max": c.spread[1], "n": len(c.runs), "keys": [r["key"] for r in c.runs]}
                            for c in self.ranked],
                "within_noise": self.within_noise}


def candidates(measured: list[tuple[Any, int, dict]], sizes: list[int], near: float = NEAR) -> list[Contender]:
    """(method, micro-batch, record) of valid measurements -> the contenders: within `near` of the best, then the
    best one a micro-batch size smaller."""
    if not measured:
        return []
    best = max(speed(r) for _, _, r in measured)
    chosen = sorted(((m, mb, r) for m, mb, r in measured if speed(r) >= (1 - near) * best), key=lambda t: -speed(t[2]))
    out = [Contender(m, mb) for m, mb, _ in chosen]
    top, top_mb, _ = chosen[0]
    smaller = [s for s in sizes if s < top_mb]
    if smaller:
        out.append(Contender(top, smaller[-1], prior=0))
    return out


def confirm(contenders: list[Contender], measure: Callable[[Any, int], dict],
            history: Callable[[Any, int], list[dict]], repeats: int) -> Confirmation:
    """Measure each contender `repeats` more times, in alternation. `history(method, micro_batch)` gives the
    store's ok records of that cell, oldest first; runs already there beyond the search's own measurement count, so
    a resumed search measures only what is missing. `measure` runs one fresh measurement."""
    for _ in range(repeats):
        for c in contenders:
            if len(history(c.method, c.micro_batch)) - c.prior < repeats:
                measure(c.method, c.micro_batch)
    for c in contenders:
        runs = history(c.method, c.micro_batch)[c.prior:][:repeats]
        c.runs = [r for r in runs if r.get("valid", True) and r.get("throughput")]
    return Confirmation(sorted((c for c in contenders if c.runs), key=lambda c: -c.median))
