"""Predictions beside measured records, and calibration of one GPU's constants from them.

Every ok throughput record is re-expressed as a workload from its own config; its measured median step over the
predicted step is the ratio `table` shows. With calibrated constants, a ratio outside 1 ± FLAG_RATIO marks a
measurement to distrust: a timing bug, a silent eager fallback, a broken kernel, a throttled GPU.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pretrain_bench import config
from pretrain_bench.analysis.perf import efficiency, fit
from pretrain_bench.analysis.perf.step import predict_step
from pretrain_bench.analysis.perf.workload import Workload, from_config
from pretrain_bench.spec import gpus

FLAG_RATIO = 0.30
CALIBRATED = ("matmul", "attention", "memory", "network", "launch_us")  # width stays the generation's
MIN_RECORDS_PER_CONSTANT = 2


def timed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "throughput" and r["status"] == "ok" and r["valid"] and r["timing"]]


def workload_of(record: dict[str, Any]) -> Workload:
    return from_config(config.from_dict(record["config"]))


def gpu_of(record: dict[str, Any]) -> str:
    return record["env"].get("gpu_sku") or record["config"]["hardware"]["gpu"]


def beside(record: dict[str, Any], store_dir: str | Path | None = None) -> dict[str, Any] | None:
    """{'predicted_step_s', 'ratio' (measured / predicted), 'calibrated', 'flagged'}; None when not predictable."""
    if record["status"] != "ok" or not record.get("timing"):
        return None
    try:
        w = workload_of(record)
        eff = efficiency.for_gpu(gpus.gpu(gpu_of(record)), store_dir)
        predicted = predict_step(w, eff).step_s
    except (config.ConfigError, KeyError):
        return None
    ratio = record["timing"]["stats"]["median"] / predicted
    calibrated = bool(store_dir) and efficiency.calibration_path(store_dir, gpu_of(record)).exists()
    return {"predicted_step_s": predicted, "ratio": ratio, "calibrated": calibrated,
            "flagged": calibrated and abs(ratio - 1) > FLAG_RATIO}


def calibrate(records: list[dict[str, Any]], gpu_key: str, store_dir: str | Path,
              measured: dict[str, float] | None = None) -> tuple[efficiency.Efficiency, float, float, int]:
    """Fit the GPU's constants on its records and write them to the store's calibration directory.

    `measured` (Efficiency fields: peak FLOP/s, memory-bound and collective bandwidths) replaces the catalogue's for
    devices without a datasheet (the CPU). Returns (constants, loss before, loss after, records used)."""
    mine = [r for r in timed(records) if gpu_of(r) == gpu_key]
    if not mine:
        raise config.ConfigError("hardware.gpu", f"the store has no ok throughput records of {gpu_key!r}; "
                                                 f"measure some first (pretrain-bench run / search)")
    gpu = gpus.gpu(gpu_key)
    start = efficiency.for_gpu(gpu)
    if measured:
        start = replace(start, **measured)
    pairs = [(workload_of(r), r["timing"]["stats"]["median"]) for r in mine]

    def ratios(eff: efficiency.Efficiency) -> list[float]:
        return [predict_step(w, eff).step_s / measured for w, measured in pairs]

    names = CALIBRATED[:max(1, min(len(CALIBRATED), len(pairs) // MIN_RECORDS_PER_CONSTANT))]
    before = fit.log_loss(ratios(start))
    # A measured peak is one benchmark matmul's rate, not a datasheet's ceiling: the model's matmuls may beat it (a
    # CPU's narrow blocks stay in cache), so the fraction may exceed 1 there.
    best = fit.coordinate_search(ratios, start, names, bounds={"matmul": (0.2, 2.0)} if measured else None)
    low, high = fit.error_band(ratios(best))
    how = (f"calibrated by `pretrain-bench calibrate` on {len(pairs)} measured records of {gpu_key} "
           f"(fitted: {', '.join(names)}; mean |log error| {before:.3f} -> {fit.log_loss(ratios(best)):.3f})")
    best = replace(best, error_low=round(low, 3), error_high=round(high, 3), fitted=how)
    efficiency.write(efficiency.calibration_path(store_dir, gpu_key), best, how)
    return best, before, fit.log_loss(ratios(best)), len(pairs)
