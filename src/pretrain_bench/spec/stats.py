"""Statistics of step times, throughput and MFU. Pure arithmetic, no torch: reports and estimates reuse it."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def step_time_stats(seconds: list[float]) -> dict[str, float]:
    """Median (the estimate) and spread of timed steps: IQR, min/max and the IQR relative to the median."""
    median = statistics.median(seconds)
    p25, p75 = percentile(seconds, 25), percentile(seconds, 75)
    return {"n": len(seconds), "median": median, "mean": statistics.fmean(seconds), "min": min(seconds),
            "max": max(seconds), "p25": p25, "p75": p75, "iqr": p75 - p25, "rel_iqr": (p75 - p25) / median,
            "stdev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0}


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops_per_device: float | None, devices: int) -> float | None:
    """Model FLOPs utilisation as a fraction of the devices' dense peak; None where no peak is defined (CPU)."""
    if not peak_flops_per_device:
        return None
    return flops_per_token * tokens_per_s / (peak_flops_per_device * devices)


def repeat_stats(values: list[float]) -> dict[str, float | int | None]:
    """Mean and spread of repeated runs; with 5 or more, also the mean without the fastest and slowest (MLPerf)."""
    ordered = sorted(values)
    return {"n": len(values), "mean": statistics.fmean(values), "min": ordered[0], "max": ordered[-1],
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "trimmed_mean": statistics.fmean(ordered[1:-1]) if len(values) >= 5 else None}
