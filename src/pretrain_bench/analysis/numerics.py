"""Does a faster method train the same model? Its loss curve against the baseline's run-to-run spread.

A speed-up that touches the numerics (FP8 matmuls, a fused loss, another attention kernel, another precision) is worth
having only if the loss stays where the baseline's own seed-to-seed variation would put it. The baseline runs with
several seeds; each method runs with the first seed. A method passes when its mean loss over the last `window` steps
lies within two standard deviations of the baseline seeds' (a two-sided test at about 95 % for normal variation);
the share of steps on which its curve lies inside the baseline's min–max band is reported beside it. No torch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

WINDOW = 20  # steps at the end of the curve whose mean loss is compared
SIGMAS = 2.0


@dataclass(frozen=True)
class Verdict:
    method: str
    final_loss: float  # mean loss over the last `window` steps
    baseline_mean: float
    baseline_std: float
    in_band: float  # share of steps inside the baseline's per-step min–max band
    within_spread: bool


def final_loss(losses: list[float], window: int) -> float:
    return statistics.fmean(losses[-window:])


def band(curves: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per-step minimum and maximum over the baseline's curves (over the steps all of them have)."""
    steps = min(len(c) for c in curves)
    return ([min(c[i] for c in curves) for i in range(steps)], [max(c[i] for c in curves) for i in range(steps)])


def judge(method: str, curve: list[float], baseline: list[list[float]], window: int = WINDOW) -> Verdict:
    if len(baseline) < 2:
        raise ValueError("the baseline's spread needs at least 2 seeds")
    finals = [final_loss(c, window) for c in baseline]
    mean, std = statistics.fmean(finals), statistics.stdev(finals)
    low, high = band(baseline)
    steps = min(len(curve), len(low))
    inside = sum(low[i] <= curve[i] <= high[i] for i in range(steps)) / max(1, steps)
    final = final_loss(curve, window)
    return Verdict(method, final, mean, std, inside, abs(final - mean) <= SIGMAS * std)


def markdown(title: str, baseline: str, seeds: int, window: int, verdicts: list[Verdict],
             speeds: dict[str, str]) -> str:
    """The comparison table: each method's final loss against the baseline's mean ± std, and its speed."""
    lines = [f"# {title}", "",
             f"Baseline `{baseline}` over {seeds} seeds; each method with the first seed. Final loss = mean over the "
             f"last {window} steps; a method is within the spread when it lies within {SIGMAS:g} standard deviations "
             "of the baseline seeds' final losses (pretrain_bench/numerics.py).", "",
             "| method | final loss | baseline mean ± std | Δ / std | steps inside the baseline band | "
             "within spread | throughput |",
             "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        ratio = (v.final_loss - v.baseline_mean) / v.baseline_std if v.baseline_std else float("inf")
        lines.append(f"| {v.method} | {v.final_loss:.4f} | {v.baseline_mean:.4f} ± {v.baseline_std:.4f} | "
                     f"{ratio:+.2f} | {v.in_band:.0%} | {'yes' if v.within_spread else '**no**'} | "
                     f"{speeds.get(v.method, '—')} |")
    return "\n".join(lines) + "\n"
