"""`predict-check --reference`: predicted tokens/s per GPU against published measurements, row by row.

A row is expressed as a Workload from its own columns (shape, sequence, GPUs, micro-batch, accumulation,
checkpointing, precision, framework text for the attention kernel and compile); nothing is fitted per row. Rows
the model cannot express are skipped with the reason. The baseline for comparison is one constant MFU per GPU type
(the median published MFU of the checked rows, 6·N + 12·L·d·T FLOPs per token with N the row's parameters).
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pretrain_bench.analysis.perf import efficiency
from pretrain_bench.analysis.perf.step import predict_step
from pretrain_bench.analysis.perf.workload import Workload
from pretrain_bench.config import ConfigError, ModelConfig
from pretrain_bench.spec import gpus

GPU_TYPES = ((r"A100.*40\s*GB", "a100-40gb"), (r"A100.*80\s*GB", "a100-80gb"), (r"H100.*PCIe", "h100-pcie"),
             (r"\bH100\b", "h100"), (r"\bH200\b", "h200"), (r"\bB200\b", "b200"), (r"RTX 3090", "rtx3090"),
             (r"RTX 4090", "rtx4090"), (r"\bL40S\b", "l40s"), (r"\bA6000\b", "a6000"), (r"\bV100\b", "v100"))
MAX_GPUS = 64  # the data-parallel rows the check covers (larger jobs are outside what we can validate)


@dataclass(frozen=True)
class Checked:
    row: dict
    gpu: str
    published: float
    predicted: float
    baseline_flops: float  # 6·N + 12·L·d·T, for the constant-MFU baseline

    @property
    def error_pct(self) -> float:
        return (self.predicted / self.published - 1) * 100


def _number(text: str) -> float | None:
    """A cell as a number: '1.3e+10', '50304 (padded)', '1.1B', '124M'; None when blank or not numeric."""
    found = re.match(r"\s*~?([0-9.]+(?:e[+-]?\d+)?)\s*([KMBT])?\b", text or "", re.IGNORECASE)
    if not found:
        return None
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}.get((found.group(2) or "").lower(), 1)
    return float(found.group(1)) * scale


def gpu_key(gpu_type: str) -> str | None:
    return next((key for pattern, key in GPU_TYPES if re.search(pattern, gpu_type, re.IGNORECASE)), None)


def _cell(row: dict, column: str) -> str:
    return (row.get(column) or "").strip()


def _checkpointing(text: str) -> tuple[int, bool]:
    """(ac_every, selective) from the row's activation-checkpointing cell."""
    t = text.lower()
    if t.startswith("selective") and "layer" in t:
        return 2, False  # torchtitan's layer-selective default: every second block
    if t.startswith("selective"):
        return 0, True
    return (1, False) if t in ("true", "full", "yes") else (0, False)


def _parallel_layout(row: dict) -> tuple[str | None, str]:
    """(strategy, reason skipped)."""
    for col in ("tp", "pp", "cp", "ep"):
        if (_number(_cell(row, col)) or 1) > 1:
            return None, f"{col.upper()} > 1 (tensor/pipeline/context/expert parallelism not modelled)"
    par = _cell(row, "parallelism")
    if re.search(r"\b(TP|PP|CP|EP)\s*\d", par) or "model-parallel size" in par:
        return None, "tensor/pipeline parallelism not modelled"
    if zero := re.search(r"zero[-_ ]?(?:stage[-_ ]?)?([123])", par, re.IGNORECASE):
        return f"zero{zero.group(1)}" + ("-offload" if "offload" in par.lower() else ""), ""
    if "SHARD_GRAD_OP" in par:
        return "fsdp-grad-op", ""
    if "FSDP" in par or "HSDP" in par:
        return "fsdp", ""
    if "single" in par.lower():
        return "single", ""
    if "DDP" in par or par.startswith("DP"):
        return "ddp", ""
    return None, f"parallelism {par!r} not recognised"


def _precision(text: str) -> tuple[str, bool]:
    """(compute precision, TF32) from the precision and framework cells; mixed bf16 when only 'amp' is said."""
    t = text.lower()
    if re.search(r"fp16|float16|half", t):
        return "fp16", False
    if re.search(r"bf16|bfloat16", t) or not re.search(r"fp32|float32|tf32", t):
        return "bf16", False
    return "fp32", "tf32" in t


def _batch(row: dict, gpus_count: int) -> tuple[int, int] | None:
    """(micro-batch, accumulation): as printed, or the one derived from the global batch and the other."""
    micro, accum, seqs = (_number(_cell(row, c)) for c in ("micro_batch", "grad_accum", "global_batch_seqs"))
    if not micro and seqs and accum:
        micro = seqs / (gpus_count * accum)
    if not micro:
        return None
    accum = accum or (seqs or micro * gpus_count) / (micro * gpus_count)
    return max(1, round(micro)), max(1, round(accum))


def _model(row: dict) -> ModelConfig:
    d, layers = int(_number(_cell(row, "d_model"))), int(_number(_cell(row, "n_layers")))
    heads = int(_number(_cell(row, "n_heads")))
    ffn = int(_number(_cell(row, "ffn_dim")) or 4 * d)
    kv = int(_number(_cell(row, "n_kv_heads")) or heads)
    gated = ffn != 4 * d or kv != heads  # SwiGLU MLPs use ~8/3·d; GQA models are Llama-style
    return ModelConfig(name=_cell(row, "model"), family="llama" if gated else "gpt2", hidden_size=d,
                       num_layers=layers, num_heads=heads, num_kv_heads=kv if gated else None, intermediate_size=ffn,
                       vocab_size=int(_number(_cell(row, "vocab"))), seq_len=int(_number(_cell(row, "seq_len"))))


def _unexpressible(row: dict) -> str:
    """Why the row cannot be expressed ("" if it can)."""
    if _number(_cell(row, "tokens_per_s_per_gpu")) is None:
        return "no printed tokens/s per GPU (derived figures are a weaker check)"
    if re.search(r"fp8|float8|fp4", (_cell(row, "precision") + " " + _cell(row, "framework")).lower()):
        return "FP8/FP4 training not modelled"
    if "moe" in _cell(row, "model").lower() or (_number(_cell(row, "ep")) or 1) > 1:
        return "mixture of experts not modelled"
    if gpu_key(_cell(row, "gpu_type")) is None:
        return f"GPU {_cell(row, 'gpu_type')[:40]!r} not in the catalogue"
    count = _number(_cell(row, "num_gpus"))
    if count is None or count > MAX_GPUS:
        return f"num_gpus {_cell(row, 'num_gpus') or 'not stated'} (checked: 1 to {MAX_GPUS})"
    if not all(_number(_cell(row, c)) for c in ("n_layers", "d_model", "n_heads", "vocab", "seq_len")):
        return "shape or sequence length not given"
    return "" if _batch(row, int(count)) else "micro-batch not given"


def express(row: dict) -> tuple[Workload | None, str]:
    """The row as a workload, or None and why it cannot be expressed."""
    strategy, why = _parallel_layout(row)
    why = _unexpressible(row) or why
    if why:
        return None, why
    count = int(_number(_cell(row, "num_gpus")))
    micro, accum = _batch(row, count)
    every, selective = _checkpointing(_cell(row, "activation_checkpointing"))
    precision, tf32 = _precision(_cell(row, "precision") + " " + _cell(row, "framework"))
    framework = _cell(row, "framework").lower()
    per_node = min(count, 8)
    workload = Workload(
        model=_model(row), gpu=gpus.gpu(gpu_key(_cell(row, "gpu_type"))), gpus_per_node=per_node,
        nodes=max(1, count // per_node), strategy=strategy if count > 1 else "single", precision=precision,
        tf32=tf32, attention="eager" if re.search(r"naive attention|eager|use_flash=false", framework) else "sdpa",
        compile=_cell(row, "compile").lower().startswith(("yes", "true", "default", "max-autotune")),
        ac_every=every, selective_ac=selective, fused_adamw="non-fused" not in _cell(row, "notes").lower(),
        micro_batch=micro, grad_accum=accum)
    return workload, ""


def read_rows(path: str | Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError("--reference", f"cannot read {path}: {e.strerror}") from None


def check(rows: Iterable[dict], effs: dict[str, efficiency.Efficiency] | None = None
          ) -> tuple[list[Checked], list[tuple[dict, str]]]:
    """Predict every expressible row; `effs` (arch -> constants) replaces the configured ones (fitting)."""
    checked, skipped = [], []
    for row in rows:
        w, why = express(row)
        if w is None:
            skipped.append((row, why))
            continue
        eff = (effs or {}).get(w.gpu.perf) or efficiency.for_gpu(w.gpu)
        predicted = predict_step(w, eff).units_per_s_per_gpu
        m = w.model
        flops = 6 * _number(row["params"]) + 12 * m.num_layers * m.hidden_size * m.seq_len
        checked.append(Checked(row, w.gpu.key, _number(row["tokens_per_s_per_gpu"]), predicted, flops))
    return checked, skipped


def baseline_errors(checked: list[Checked]) -> list[float]:
    """Absolute % errors of one constant MFU per GPU type (the median implied MFU of these rows)."""
    mfu = {}
    for key in {c.gpu for c in checked}:
        peak = gpus.gpu(key).peak("bf16")
        mfu[key] = statistics.median(c.published * c.baseline_flops / peak for c in checked if c.gpu == key)
    return [abs(mfu[c.gpu] * gpus.gpu(c.gpu).peak("bf16") / c.baseline_flops / c.published - 1) * 100
            for c in checked]


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summary_line(errors: list[float]) -> str:
    return (f"predict-check: {len(errors)} rows, median abs error {statistics.median(errors):.1f} %, "
            f"p90 {p90(errors):.1f} %")


def report(checked: list[Checked], skipped: list[tuple[dict, str]]) -> list[str]:
    """The row table, skipped rows, per-group medians against the baseline, and the summary line last."""
    lines = ["row_id, published, predicted, error %"]
    lines += [f"{c.row['row_id']}, {c.published:.0f}, {c.predicted:.0f}, {c.error_pct:+.1f}" for c in checked]
    lines += ["", f"skipped {len(skipped)} rows:"]
    lines += [f"  {r['row_id']} ({r['source_key']}): {why}" for r, why in skipped]
    if not checked:
        return [*lines, "predict-check: 0 rows, median abs error n/a %, p90 n/a %"]
    ours = [abs(c.error_pct) for c in checked]
    base = baseline_errors(checked)
    lines += ["", "group, rows, median |error| % (model / constant MFU), p90 % (model / constant MFU)"]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(checked):
        groups.setdefault(f"source {c.row['source_key']}", []).append(i)
        groups.setdefault(f"gpu {c.gpu}", []).append(i)
    for name, idx in sorted(groups.items()):
        a, b = [ours[i] for i in idx], [base[i] for i in idx]
        lines.append(f"{name}, {len(idx)}, {statistics.median(a):.1f} / {statistics.median(b):.1f}, "
                     f"{p90(a):.1f} / {p90(b):.1f}")
    lines.append(f"baseline (constant MFU per GPU type): median {statistics.median(base):.1f} %, p90 {p90(base):.1f} %")
    return [*lines, summary_line(ours)]
