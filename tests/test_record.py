"""Records carry every field downstream code relies on, and impossible measurements are never valid."""

from __future__ import annotations

import json

import pytest

from pretrain_bench import config
from pretrain_bench.analysis import record


def measurement(step_s):
    return {"step_s": step_s, "first_step_s": 100.0, "setup_s": 5.0, "timed_wall_s": sum(step_s),
            "legacy_step_s": [t / 2 for t in step_s],
            "losses": [10.9, 10.8], "grad_norms": [1.0, 0.9], "skipped_steps": 0, "peak_mem_bytes": 40 * 2**30,
            "mem_kind": "cuda_max_allocated"}


def make(step_s, overrides=("model=pythia-1b", "hardware=1xh100", "tricks=free-lunch", "micro_batch=8")):
    cfg = config.compose(list(overrides))
    env = {**record.library_versions(), "gpu_sku": "h100", "device_name": "NVIDIA H100 80GB HBM3"}
    return record.make_record(cfg, record.cell_key(cfg, env, "h100"), "ok", None, measurement(step_s), env)


def test_ok_record_is_complete_and_json():
    r = make([32.0, 33.0, 31.5, 32.5, 32.2])
    assert record.problems(json.loads(json.dumps(r))) == []
    assert r["cell"]["grad_accum"] == 128 and r["cell"]["strategy"] == "single"
    assert r["timing"]["stats"]["median"] == 32.2
    assert r["throughput"]["tokens_per_s"] == pytest.approx(1024 * 2048 / 32.2)
    assert r["flops"]["peak_dtype"] == "bf16" and 0.3 < r["flops"]["mfu"] < 0.5
    assert r["timing"]["compile_s"] == pytest.approx(100.0 - 32.2)  # first step minus a steady one
    assert r["numerics"]["matches_recipe"] and r["valid"]


def test_setup_and_reserved_peaks_are_kept_apart_from_the_training_peak():
    cfg = config.compose(["model=pythia-1b", "hardware=1xh100", "tricks=free-lunch", "micro_batch=8"])
    env = {**record.library_versions(), "gpu_sku": "h100", "device_name": "NVIDIA H100 80GB HBM3"}
    m = {**measurement([32.0] * 5), "setup_peak_mem_bytes": 8 * 2**30, "peak_reserved_bytes": 44 * 2**30,
         "num_alloc_retries": 3}
    r = record.make_record(cfg, record.cell_key(cfg, env, "h100"), "ok", None, m, env)
    assert r["memory"] == {"peak_gib": 40.0, "kind": "cuda_max_allocated", "reserved_gib": 44.0, "setup_peak_gib": 8.0,
                           "num_alloc_retries": 3}
    assert "setup_peak_gib" not in make([32.0] * 5)["memory"]  # CPU runs have none


def test_mfu_above_peak_is_invalid():
    r = make([5.0] * 5)  # 1B at 419k tokens/s on one H100 would be > 100% of peak
    assert r["flops"]["mfu"] > 1 and not r["valid"] and "exceeds" in r["invalid_reason"]


def test_key_ignores_run_length_but_not_the_cell():
    versions = record.library_versions()
    a = config.compose(["steps=5"])
    b = config.compose(["steps=20", "store=elsewhere"])
    c = config.compose(["micro_batch=4"])
    assert record.cell_key(a, versions, "cpu") == record.cell_key(b, versions, "cpu")
    assert record.cell_key(a, versions, "cpu") != record.cell_key(c, versions, "cpu")
    assert record.cell_key(a, versions, "cpu") != record.cell_key(a, {**versions, "torch": "0"}, "cpu")


def test_schema_problems_are_reported():
    assert "schema_version" in record.problems({"schema_version": 99})[0]
    assert record.problems([1, 2])
    r = make([32.0] * 5)
    r["status"] = "maybe"
    assert any("status" in p for p in record.problems(r))


def test_records_keep_mfu_in_both_conventions():
    """Full T×T attention (PaLM, nanoGPT, torchtitan) and Megatron-LM's causal half, from the same step time."""
    r = make([32.0] * 5)
    m = config.compose(["model=pythia-1b"]).model
    L, d, T = m.num_layers, m.hidden_size, m.seq_len
    assert r["flops"]["per_token"] - r["flops"]["per_token_causal"] == pytest.approx(6 * L * d * T)
    assert r["flops"]["mfu_causal"] == pytest.approx(r["flops"]["mfu"] * r["flops"]["per_token_causal"]
                                                     / r["flops"]["per_token"])
    vit = make([1.0] * 5, ("model=vit-l16", "hardware=1xh100", "tricks=free-lunch", "micro_batch=8"))
    assert vit["flops"]["mfu_causal"] == vit["flops"]["mfu"]  # no causal mask: nothing halved
