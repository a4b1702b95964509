"""`pretrain-bench peers`: the HF Trainer against our best method on the same cell, alternating, in one table.

Why alternating: two methods measured one after the other see different machine states (clock boost, thermals,
other tenants); HF, ours, HF, ours, … spreads any drift over both sides instead of charging it to one. Each run is a
fresh set of worker processes (launch.py), the HF ones in worker mode `hf-trainer` (hf_trainer.py).

The two sides:
- HF: `transformers.Trainer` with the `TrainingArguments` of the invocation's trick set (default `free-lunch`: the
  recipe's bf16/fp16, TF32, SDPA, fused AdamW, torch_compile), DDP when the hardware has several devices,
  `micro_batch` per device (by default ours' micro-batch). Records of kind `peer`, never ranked among our methods.
- ours: the best valid throughput record already in the store for the model and hardware (its strategy, tricks and
  micro-batch), else the invocation's own cell. Records of kind `throughput`.
Both train the invocation's model shape on the same synthetic tokens, for `warmup_steps` + `steps` optimizer steps.
On CPU, `tricks=naive` gives both sides fp32, eager attention and no compile (no peak is defined there, so MFU is
n/a): a fast end-to-end check, not a speed comparison.

No torch here: planning, the order of runs and the table read configs and records only.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable

from pretrain_bench import config
from pretrain_bench.config import BenchConfig, ConfigError, StrategyConfig
from pretrain_bench.spec import models, stats

SIDES = ("hf", "ours")
LABELS = {"hf": "HF Trainer", "ours": "pretrain-bench"}


def check(cfg: BenchConfig) -> None:
    """What a peer comparison cannot use: real text (the HF side trains on synthetic tokens) or legacy timing."""
    if cfg.data.source != "synthetic":
        raise ConfigError("data", f"peers compares throughput on synthetic tokens; got data.source="
                                  f"{cfg.data.source!r}; allowed: data=synthetic")
    if cfg.timing != "honest":
        raise ConfigError("timing", "peers times both sides honestly (whole optimizer steps); allowed: honest")
    tr = cfg.tricks
    inexpressible = [key for key, on in (("tricks.fused_linear_ce", tr.fused_linear_ce), ("tricks.fp8", tr.fp8),
                                         ("tricks.attention_backend", tr.attention_backend != "auto"),
                                         ("tricks.ac_every", tr.activation_checkpointing and tr.ac_every > 1)) if on]
    if inexpressible:  # the HF side runs the invocation's tricks; it would be labelled with ones it never ran
        raise ConfigError(inexpressible[0], f"the HF Trainer side runs this invocation's tricks, and TrainingArguments "
                                            f"cannot express {', '.join(inexpressible)} (our side is the best stored "
                                            f"method either way); allowed: trick sets without them, e.g. "
                                            f"tricks=free-lunch")
    if cfg.model.family not in models.CAUSAL_LM_FAMILIES:
        raise ConfigError("model.family", f"peers compares causal language models (the HF side trains on "
                                          f"synthetic tokens); got {cfg.model.family!r}; allowed: "
                                          f"{', '.join(models.CAUSAL_LM_FAMILIES)}")


def ours_config(cfg: BenchConfig, best: dict | None) -> BenchConfig:
    """Our side: the best stored method (strategy, tricks, micro-batch) on this invocation's model, data and steps."""
    if best is None:
        return cfg
    method = config.from_dict(best["config"])
    ours = dataclasses.replace(cfg, strategy=method.strategy, tricks=method.tricks, micro_batch=method.micro_batch)
    config.validate(ours)
    return ours


def hf_config(cfg: BenchConfig, micro_batch: int) -> BenchConfig:
    """The HF side: the invocation's cell as the Trainer runs it (one process, or DDP under torchrun)."""
    hf = dataclasses.replace(cfg, micro_batch=micro_batch,
                             strategy=StrategyConfig(backend="ddp" if cfg.world_size > 1 else "single"))
    config.validate(hf)
    return hf


def measure_alternating(run: Callable[[BenchConfig, str], dict], hf: BenchConfig, ours: BenchConfig, repeats: int,
                        on_record: Callable[[str, int, dict], None] | None = None) -> dict[str, list[dict]]:
    """HF, ours, HF, ours, …: `run(cfg, kind)` measures one run into a record (Runner.measure with force)."""
    records: dict[str, list[dict]] = {side: [] for side in SIDES}
    for i in range(repeats):
        for side, cfg, kind in (("hf", hf, "peer"), ("ours", ours, "throughput")):
            records[side].append(run(cfg, kind))
            if on_record:
                on_record(side, i, records[side][-1])
    return records


def side_row(side: str, records: list[dict]) -> dict:
    """One side's repeats: median tokens/s (the figure compared), MFU at that speed, pooled step times."""
    first, ok = records[0], [r for r in records if r.ok and r["valid"]]
    c = first["cell"]
    row = {"side": side, "label": LABELS[side], "method": f"{c['strategy']} · {c['tricks']}",
           "micro_batch": c["micro_batch"], "grad_accum": c["grad_accum"], "world_size": c["world_size"],
           "statuses": ["invalid" if r.ok and not r["valid"] else r["status"] for r in records],
           "runs_tokens_per_s": [r["throughput"]["tokens_per_s"] for r in ok], "keys": [r["key"] for r in records],
           "tokens_per_s": None, "mfu": None, "step": None, "peak_gib": None, "first_loss": None}
    if ok:
        speed = statistics.median(row["runs_tokens_per_s"])
        flops = ok[0]["flops"]
        row.update(tokens_per_s=speed,
                   mfu=stats.mfu(flops["per_token"], speed, flops["peak_per_device"], c["world_size"]),
                   step=stats.step_time_stats([s for r in ok for s in r["timing"]["step_s"]]),
                   peak_gib=max(r["memory"]["peak_gib"] for r in ok), first_loss=ok[0]["losses"][0])
    return row


def ratio(rows: dict[str, dict]) -> float | None:
    """ours / HF median tokens/s; None unless both sides have an ok run."""
    hf, ours = rows["hf"]["tokens_per_s"], rows["ours"]["tokens_per_s"]
    return ours / hf if hf and ours else None


def render(model: str, hardware_name: str, gpu: str, rows: dict[str, dict], repeats: int, steps: int) -> str:
    """Markdown: a row per side and the ratio, ready to commit as results/<gpu>/peers.md."""
    head = ("side", "method", "mb×acc", "tokens/s (median)", "per run", "step s (median ± IQR/2)", "MFU",
            "peak mem GiB", "step-1 loss", "runs")
    lines = [f"## {model} on {hardware_name} ({gpu}): HF Trainer vs pretrain-bench", "",
             f"{repeats} alternating run(s) per side (HF first), {steps} timed optimizer steps each after warm-up; "
             "synthetic tokens, same model shape and initial weights.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for side in SIDES:
        r = rows[side]
        cells = [r["label"], r["method"], f"{r['micro_batch']}×{r['grad_accum']}", "—", "—", "—", "—", "—", "—",
                 ", ".join(r["statuses"])]
        if r["tokens_per_s"] is not None:
            mfu = "n/a (CPU)" if r["mfu"] is None else f"{r['mfu']:.1%}"
            cells[3:9] = [f"{r['tokens_per_s']:,.0f}", ", ".join(f"{t:,.0f}" for t in r["runs_tokens_per_s"]),
                          f"{r['step']['median']:.3f} ± {r['step']['iqr'] / 2:.3f}", mfu, f"{r['peak_gib']:.2f}",
                          f"{r['first_loss']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    value = ratio(rows)
    lines += ["", f"**ours / HF: {value:.2f}×** (median tokens/s)" if value is not None
              else "**ours / HF: n/a** (a side has no ok run)"]
    return "\n".join(lines) + "\n"
