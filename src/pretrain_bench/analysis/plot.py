"""Figures from result records: recipe days vs GPU count, trick speed-ups, peak memory vs micro-batch. No torch.

Times come only from ok, valid throughput records (never from probes, profiles or legacy timing). Each function
writes one PNG and returns its path, or raises ValueError saying what the records lack.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pretrain_bench.analysis.estimate import recipe_estimate

NAIVE = "naive"
_MEMORY_KINDS = ("throughput", "probe")  # probes are micro-batch fit tests: their memory (and OOMs) count


def _timed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records whose step time may be compared: ok, valid throughput measurements."""
    return [r for r in records if r.rankable and r["timing"]]


def _nothing(what: str, records: list[dict[str, Any]], need: str) -> ValueError:
    seen = Counter(f"{r['kind']}/{r['status']}{'' if r['valid'] else '/invalid'}" for r in records)
    found = ", ".join(f"{n} {k}" for k, n in sorted(seen.items())) or "no records at all"
    return ValueError(f"nothing to plot for {what}: it needs {need}; got {found}")


def _step_s(r: dict[str, Any]) -> float:
    return r["timing"]["stats"]["median"]


def _fastest(records: list[dict[str, Any]], key) -> dict[Any, dict[str, Any]]:
    """The record with the shortest median step for each key(record)."""
    best: dict[Any, dict[str, Any]] = {}
    for r in records:
        k = key(r)
        if k not in best or _step_s(r) < _step_s(best[k]):
            best[k] = r
    return best


def _save(fig, path: str | Path) -> Path:
    """Write the PNG, with the legend right of the plot where it hides no data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for ax in fig.axes:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _figure(width: float = 8, height: float = 5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def days_vs_gpus(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Days to finish each model's recipe against GPU count: one line per (model, GPU type), using the fastest
    valid set-up on each hardware; error bars span the repeated fresh runs of that set-up, where there are some."""
    best = _fastest(_timed(records), key=lambda r: (r["cell"]["model"], r["cell"]["gpu"], r["cell"]["world_size"]))
    lines: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for (model, gpu, world), r in best.items():
        lines[model, gpu].append((world, recipe_estimate(r, records)))
    if not lines:
        raise _nothing("days vs GPUs", records, "ok, valid throughput records with timing")
    fig, ax = _figure()
    for (model, gpu), points in sorted(lines.items()):
        points.sort(key=lambda p: p[0])
        worlds, days = [w for w, _ in points], [e["days"] for _, e in points]
        spread = [[e["days"] - (e["days_low"] or e["days"]) for _, e in points],
                  [(e["days_high"] or e["days"]) - e["days"] for _, e in points]]
        ax.errorbar(worlds, days, yerr=spread, marker="o", capsize=3, label=f"{model} · {gpu}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted({w for points in lines.values() for w, _ in points}))
    ax.xaxis.set_major_formatter("{x:.0f}")
    ax.set(xlabel="GPUs", ylabel="days for the full recipe (log)", title="Recipe time vs GPU count (fastest set-up)")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _speedups(records: list[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """Per (model, hardware, strategy, micro-batch) cell with a naive record: step-time ratio naive / tricks."""
    def cell(r):
        c = r["cell"]
        return c["model"], c["hardware"], c["strategy"], c["micro_batch"]

    best = _fastest(_timed(records), key=lambda r: (*cell(r), r["cell"]["tricks"]))
    out: dict[tuple, dict[str, float]] = defaultdict(dict)
    for (*group, tricks), r in best.items():
        naive = best.get((*group, NAIVE))
        if naive is not None and tricks != NAIVE:
            out[tuple(group)][tricks] = _step_s(naive) / _step_s(r)
    return dict(out)


def trick_speedups(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Bar chart of each trick set's speed-up over `naive` in the same model, hardware, strategy and micro-batch."""
    speedups = _speedups(records)
    if not speedups:
        raise _nothing("trick speed-ups", records,
                       f"ok, valid throughput records of {NAIVE!r} and another trick set in the same model, "
                       "hardware, strategy and micro-batch")
    labels = sorted({t for by_tricks in speedups.values() for t in by_tricks})
    groups = sorted(speedups)
    width = 0.8 / len(groups)
    fig, ax = _figure(max(6.0, 3 + len(labels) * len(groups) * 0.4), 5)
    for i, group in enumerate(groups):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j, t in enumerate(labels) if t in speedups[group]]
        ys = [speedups[group][t] for t in labels if t in speedups[group]]
        model, hw, strategy, micro_batch = group
        bars = ax.bar(xs, ys, width, label=f"{model} · {hw} · {strategy} · mb {micro_batch}")
        ax.bar_label(bars, fmt="%.1f×", fontsize="small")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set(ylabel=f"speed-up over {NAIVE} (×)", title="Trick speed-ups (median step time)")
    return _save(fig, path)


def _memory_series(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per (model, hardware, strategy, tricks): {"peak": micro-batch -> largest peak GiB, "oom": micro-batches}."""
    series: dict[tuple, dict[str, Any]] = defaultdict(lambda: {"peak": {}, "oom": set()})
    for r in records:
        if r["kind"] not in _MEMORY_KINDS:
            continue
        c = r["cell"]
        s, mb = series[c["model"], c["hardware"], c["strategy"], c["tricks"]], c["micro_batch"]
        if r["status"] == "oom":
            s["oom"].add(mb)
        elif r["status"] == "ok" and r.get("memory"):
            s["peak"][mb] = max(s["peak"].get(mb, 0.0), r["memory"]["peak_gib"])
    return {k: s for k, s in series.items() if s["peak"] or s["oom"]}


def memory_vs_micro_batch(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Peak memory against micro-batch per (model, hardware, strategy, tricks); out-of-memory micro-batches are
    marked with an x along the top edge."""
    series = _memory_series(records)
    if not series:
        raise _nothing("memory vs micro-batch", records, "ok records with a memory measurement or oom records")
    from matplotlib.transforms import blended_transform_factory

    fig, ax = _figure()
    top_edge = blended_transform_factory(ax.transData, ax.transAxes)
    for (model, hw, strategy, tricks), s in sorted(series.items()):
        sizes = sorted(s["peak"])
        (line,) = ax.plot(sizes, [s["peak"][mb] for mb in sizes], marker="o",
                          label=f"{model} · {hw} · {strategy} · {tricks}")
        if s["oom"]:
            ax.plot(sorted(s["oom"]), [0.97] * len(s["oom"]), "x", color=line.get_color(), markersize=9,
                    markeredgewidth=2, transform=top_edge, clip_on=False)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({mb for s in series.values() for mb in (*s["peak"], *s["oom"])}))
    ax.xaxis.set_major_formatter("{x:.0f}")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # headroom for the out-of-memory marks
    ax.set(xlabel="micro-batch (sequences per device)", ylabel="peak memory per device (GiB)",
           title="Peak memory vs micro-batch (x: out of memory)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def loss_curves(baseline: dict[str, list[list[float]]], methods: dict[str, list[float]], path: str | Path,
                title: str) -> Path:
    """Training loss per step: the baseline's seeds as a min–max band with their mean, each method as a line."""
    (label, curves), = baseline.items()
    if not curves:
        raise ValueError("nothing to plot for loss curves: the baseline has no ok run")
    from pretrain_bench.analysis.numerics import band

    low, high = band(curves)
    steps = range(1, len(low) + 1)
    fig, ax = _figure()
    ax.fill_between(steps, low, high, alpha=0.25, label=f"{label}: {len(curves)} seeds, min–max")
    ax.plot(steps, [sum(c[i] for c in curves) / len(curves) for i in range(len(low))], linewidth=1,
            label=f"{label}: mean")
    for name, curve in methods.items():
        ax.plot(range(1, len(curve) + 1), curve, linewidth=1, label=name)
    ax.set(xlabel="optimizer step", ylabel="training loss", title=title)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
