"""Fitting the efficiency constants to measurements: a bounded coordinate search in log space.

The loss is the mean absolute log error of predicted against measured throughput, which weighs a 2× miss the same
in either direction and is not dominated by a few outliers. Deterministic and dependency-free (no scipy), and fast
enough: a few thousand predictions of ~150 rows take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from pretrain_bench.analysis.perf.efficiency import Efficiency

BOUNDS = {"matmul": (0.2, 1.0), "width": (1.0, 2048.0), "attention": (0.1, 1.0), "memory": (0.2, 1.0),
          "network": (0.1, 1.0), "launch_us": (0.5, 100.0)}


def log_loss(ratios: Sequence[float]) -> float:
    """Mean |log(predicted / measured)|."""
    return sum(abs(math.log(r)) for r in ratios) / len(ratios)


def coordinate_search(ratios: Callable[[Efficiency], Sequence[float]], start: Efficiency,
                      names: Sequence[str], rounds: int = 80, bounds: dict | None = None) -> Efficiency:
    """Move one constant at a time by a multiplicative step while the loss falls; halve the step when none helps.
    `bounds` replaces some of BOUNDS."""
    bounds = {**BOUNDS, **(bounds or {})}
    best, best_loss, step = start, log_loss(ratios(start)), 0.5
    for _ in range(rounds):
        improved = False
        for name in names:
            low, high = bounds[name]
            for direction in (1, -1):
                value = min(high, max(low, getattr(best, name) * math.exp(direction * step)))
                candidate = replace(best, **{name: value})
                loss = log_loss(ratios(candidate))
                if loss < best_loss - 1e-9:
                    best, best_loss, improved = candidate, loss, True
        if not improved:
            step /= 2
            if step < 0.005:
                break
    return best


def error_band(ratios: Sequence[float]) -> tuple[float, float]:
    """10th and 90th percentiles of measured / predicted: the interval predictions carry."""
    measured_over_predicted = sorted(1 / r for r in ratios)
    n = len(measured_over_predicted)
    return (measured_over_predicted[int(0.1 * (n - 1))], measured_over_predicted[math.ceil(0.9 * (n - 1))])
