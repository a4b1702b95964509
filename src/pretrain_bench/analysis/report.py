"""Comparison tables from result records (markdown, CSV, HTML). Reads plain records only; no torch.

Rows are grouped by (model, hardware) and sorted fastest first; the best valid measurement of each group is
starred. Records that failed or are invalid (MFU above peak) are listed, with their status and its reason, but never
starred.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from itertools import groupby

from pretrain_bench.analysis.estimate import recipe_estimate
from pretrain_bench.analysis.perf import records as perf_records
from pretrain_bench.analysis.record import Record
from pretrain_bench.spec.stats import repeat_stats

COLUMNS = ("best", "model", "hardware", "strategy", "tricks", "mb×acc", "tokens/s", "MFU", "step s (median ± IQR/2)",
           "peak mem GiB", "measured / predicted", "compile s", "recipe days (runs)", "GPU-days", "cloud $",
           "5-yr purchase $", "floor days", "status")
FORMATS = ("md", "csv", "html", "json")
FILTERS = ("model", "hardware", "strategy", "tricks")  # cell fields a table can be narrowed to
_REASON_CHARS = 120


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _speed(r: Record) -> float:
    return (r.tokens_per_s or 0.0) if r.ok and r["valid"] else -1.0


def rate(throughput: dict, unit: bool = False) -> str:
    """The throughput figure; vision models count images, not tokens, and always say so."""
    images = throughput.get("unit") == "image"
    text = f"{throughput['tokens_per_s']:,.0f}"
    if unit:
        return f"{text} {'images' if images else 'tokens'}/s"
    return f"{text} images" if images else text


def _compile_note(r: dict) -> str:
    """A compiled run that broke graphs or recompiled ran partly eager or compiled again: the table says so."""
    c = r.get("compile") or {}
    parts = [f"{c[k]} {name}{'s' * (c[k] > 1)}" for k, name in (("graph_breaks", "graph break"),
                                                                ("recompiles", "recompile")) if c.get(k)]
    return f" ({', '.join(parts)})" if parts else ""


def row(r: dict, best: bool, history: list[dict] = (), store_dir: str | None = None) -> dict[str, str]:
    """One table row; `history` holds other fresh runs of the same cell, which give the days' range; `store_dir` is
    the store read, whose calibration the prediction uses (default: the store the record was measured into)."""
    c = r["cell"]
    out = dict.fromkeys(COLUMNS, "")
    out.update({"best": "★" if best else "", "model": c["model"], "hardware": c["hardware"],
                "strategy": c["strategy"], "tricks": c["tricks"], "mb×acc": f"{c['micro_batch']}×{c['grad_accum']}",
                "status": status(r) + _compile_note(r)})
    if r.get("memory"):
        out["peak mem GiB"] = f"{r['memory']['peak_gib']:.2f}"
    if not r.get("throughput"):
        return out
    stats, mfu = r["timing"]["stats"], r["flops"]["mfu"]
    out["tokens/s"] = rate(r["throughput"])
    out["MFU"] = "n/a (CPU)" if mfu is None else f"{mfu:.1%}"
    out["step s (median ± IQR/2)"] = f"{stats['median']:.3f} ± {stats['iqr'] / 2:.3f}"
    # now, with the store's calibration (a record's own `prediction` is the one of its time)
    if pred := perf_records.beside(r, store_dir or r["config"].get("store")) or r.get("prediction"):
        flag = " ⚠ >30% off the calibrated prediction" if pred["flagged"] else ""
        out["measured / predicted"] = f"{pred['ratio']:.2f}{'' if pred['calibrated'] else ' (uncal.)'}{flag}"
    if r["timing"]["compile_s"] is not None:
        out["compile s"] = f"{r['timing']['compile_s']:.1f}"
    if est := recipe_estimate(r, history):
        spread = (f"{est['days_low']:,.1f}–{est['days_high']:,.1f}, " if est["days_low"] is not None else "")
        out["recipe days (runs)"] = f"{est['days']:,.1f} ({spread}{est['runs']} run{'s' * (est['runs'] > 1)})"
        out["GPU-days"] = f"{est['gpu_days']:,.1f}"
        out["cloud $"] = _money(est["cost_cloud_usd"])
        out["5-yr purchase $"] = _money(est["cost_purchase_usd"])
        out["floor days"] = "" if est["floor_days"] is None else f"{est['floor_days']:,.2f}"
    return out


def status(r: dict) -> str:
    """`ok`, or the status with its reason: the error's first line, or why an ok measurement is not valid."""
    if r["status"] == "ok" and r["valid"]:
        return "ok"
    if r["status"] == "ok":
        return f"invalid: {r.get('invalid_reason') or 'not ranked'}"
    reason = (r.get("error") or "").strip().splitlines()
    text = f"{r['status']}: {reason[0]}" if reason else r["status"]
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 1] + "…"


def select(records: list[dict], **wanted: str | None) -> list[dict]:
    """The records whose cell matches every given field (FILTERS: model, hardware, strategy, tricks)."""
    given = {k: v for k, v in wanted.items() if v is not None}
    if unknown := set(given) - set(FILTERS):
        raise ValueError(f"unknown filter {sorted(unknown)}; allowed: {', '.join(FILTERS)}")
    return [r for r in records if all(r["cell"][k] == v for k, v in given.items())]


def _ordered(records: list[dict]) -> list[dict]:
    """Throughput records by (model, hardware), fastest valid first within each."""
    records = [r for r in records if r["kind"] == "throughput"]
    return sorted(records, key=lambda r: (r["cell"]["model"], r["cell"]["hardware"], -_speed(r)))


def rows(records: list[dict], history: list[dict] = (), store_dir: str | None = None) -> list[dict[str, str]]:
    history = history or records
    out = []
    for _, group in groupby(_ordered(records), key=lambda r: (r["cell"]["model"], r["cell"]["hardware"])):
        out += [row(r, best=(i == 0 and _speed(r) > 0), history=history, store_dir=store_dir)
                for i, r in enumerate(group)]
    return out


def table(records: list[dict], fmt: str = "md", history: list[dict] = (), store_dir: str | None = None) -> str:
    """`records`: one per cell (the store's latest); `history`: every record, for the repeated runs of a cell;
    `store_dir`: the store they come from (its calibration; a copied or moved store keeps working)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; allowed: {', '.join(FORMATS)}")
    body = rows(records, history, store_dir)
    if fmt == "json":
        keys = [r["key"] for r in _ordered(records)]
        return json.dumps([{"key": k, **row} for k, row in zip(keys, body, strict=True)], indent=2,
                          ensure_ascii=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(body)
        return buf.getvalue()
    if fmt == "html":
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        cells = ["<tr{}>{}</tr>".format(' class="best"' if r["best"] else "",
                                         "".join(f"<td>{html.escape(r[c])}</td>" for c in COLUMNS)) for r in body]
        return (f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(cells)
                + "\n</tbody>\n</table>\n")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in body]
    return "\n".join(lines) + "\n"


def _spread(stats: dict | None, fmt: str) -> str:
    if not stats:
        return "—"
    text = f"{stats['mean']:{fmt}} ± {stats['stdev']:{fmt}}"
    return text + (f" (trimmed {stats['trimmed_mean']:{fmt}})" if stats.get("trimmed_mean") is not None else "")


def target_table(rows: list[dict]) -> str:
    """Methods compared at equal quality: a faster step that needs more steps shows up here."""
    head = ("method", "reached", "time to target s", "steps to target", "tokens/s", "final val loss")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        speed = "—" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"
        lines.append(f"| {r['method']} | {r['reached']}/{r['runs']} | {_spread(r['time_s'], '.1f')} | "
                     f"{_spread(r['steps'], '.0f')} | {speed} | {_spread(r['final_val_loss'], '.3f')} |")
    return "\n".join(lines) + "\n"


def timing_table(records: list[dict]) -> str:
    """Honest vs legacy (reference-harness) step time, read from the same steps of each measured cell."""
    head = ("model", "hardware", "strategy", "tricks", "mb×acc", "honest step s", "legacy step s", "legacy / honest")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if r["kind"] != "throughput" or r["status"] != "ok" or not (r.get("timing") or {}).get("legacy"):
            continue
        c, t = r["cell"], r["timing"]
        lines.append(f"| {c['model']} | {c['hardware']} | {c['strategy']} | {c['tricks']} | "
                     f"{c['micro_batch']}×{c['grad_accum']} | {t['honest_stats']['median']:.3f} | "
                     f"{t['legacy']['stats']['median']:.3f} | {t['legacy']['ratio_to_honest']:.2f} |")
    return "\n".join(lines) + "\n"


def target_row(method: str, records: list[dict]) -> dict:
    """One method's repeats: time and steps to target over the runs that reached it, speed over all."""
    reached = [r for r in records if r["status"] == "ok"]
    speeds = [r["throughput"]["tokens_per_s"] for r in records if r.get("throughput")]
    return {"method": method, "runs": len(records), "reached": len(reached),
            "statuses": [r["status"] for r in records],
            "time_s": repeat_stats([r["target"]["time_s"] for r in reached]) if reached else None,
            "steps": repeat_stats([r["target"]["steps"] for r in reached]) if reached else None,
            "tokens_per_s": statistics.median(speeds) if speeds else None,
            "final_val_loss": repeat_stats([r["target"]["final_val_loss"] for r in records
                                            if r.get("target")]) if speeds else None,
            "keys": [r["key"] for r in records]}
