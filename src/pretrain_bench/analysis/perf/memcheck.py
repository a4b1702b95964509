"""`predict-check --memory`: the largest micro-batch that fits, predicted against a measured batch-size sweep.

The sweep (Languini's format: device, L, h, ff, nh, vocab, seq, bs, compile, flash, oom) lists every batch size
tried per (GPU, model). The measured largest batch is the largest that ran; the prediction is the memory model's
for a GPT-2 block with fp16 autocast, Adam and the sweep's attention kernel.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pretrain_bench.analysis.perf import memory
from pretrain_bench.analysis.perf.workload import Workload
from pretrain_bench.config import ConfigError, ModelConfig
from pretrain_bench.spec import gpus

TOLERANCE = 0.15


def configs(path: str | Path) -> dict[tuple, dict]:
    """(device, L, h, ff, nh, vocab, seq, flash) -> {'fits': largest batch that ran, 'row': a row}."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError("--memory", f"cannot read {path}: {e.strerror}") from None
    out: dict[tuple, dict] = {}
    for r in rows:
        key = tuple(r[c] for c in ("device", "L", "h", "ff", "nh", "vocab", "seq", "flash"))
        entry = out.setdefault(key, {"fits": 0, "row": r})
        if r["oom"].strip().lower() == "false":
            entry["fits"] = max(entry["fits"], int(r["bs"]))
    return out


def workload(row: dict) -> Workload | None:
    key = gpus.identify(row["device"])
    if key is None:
        return None
    m = ModelConfig(name=f"L{row['L']}-h{row['h']}", family="gpt2", hidden_size=int(row["h"]),
                    num_layers=int(row["L"]), num_heads=int(row["nh"]), intermediate_size=int(row["ff"]),
                    vocab_size=int(row["vocab"]), seq_len=int(row["seq"]))
    return Workload(model=m, gpu=gpus.gpu(key), precision="fp16",
                    attention="sdpa" if row["flash"].strip().lower() == "true" else "eager",
                    compile=row["compile"] not in ("", "none", "False"), fused_adamw=False)


def report(path: str | Path) -> list[str]:
    lines = ["device, L, h, measured largest batch, predicted, within 15 %"]
    hits = total = 0
    for key, entry in configs(path).items():
        w = workload(entry["row"])
        if w is None:
            lines.append(f"{key[0]}: skipped (GPU not in the catalogue)")
            continue
        predicted = memory.largest_micro_batch(w)
        ok = entry["fits"] > 0 and abs(predicted - entry["fits"]) <= TOLERANCE * entry["fits"]
        hits, total = hits + ok, total + 1
        lines.append(f"{key[0]}, {key[1]}, {key[2]}, {entry['fits']}, {predicted}, {'yes' if ok else 'no'}")
    share = 100 * hits / total if total else 0.0
    return [*lines, f"memory-check: {total} configs, largest batch within 15 % on {share:.0f} %"]
