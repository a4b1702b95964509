"""Figures come out of a handful of records as non-empty PNGs, use only comparable measurements, and fail with a
message saying what is missing."""

from __future__ import annotations

import pytest

from pretrain_bench import config
from pretrain_bench.analysis import plot, record

PNG = b"\x89PNG\r\n\x1a\n"


def make(*overrides: str, step_s: float = 30.0, status: str = "ok", peak_gib: float = 30.0,
         kind: str = "throughput") -> dict:
    cfg = config.compose(["model=pythia-1b", "hardware=4xa100", "strategy=ddp", "tricks=free-lunch",
                          "micro_batch=16", *overrides])
    env = {**record.library_versions(), "gpu_sku": cfg.hardware.gpu, "device_name": "test"}
    steps = [step_s * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
    measurement = None if status == "oom" else {
        "step_s": steps, "legacy_step_s": steps, "first_step_s": 2 * step_s, "setup_s": 5.0,
        "timed_wall_s": sum(steps), "losses": [10.9], "grad_norms": [1.0], "skipped_steps": 0,
        "peak_mem_bytes": peak_gib * 2**30, "mem_kind": "cuda_max_allocated"}
    error = "CUDA out of memory" if status == "oom" else None
    return record.make_record(cfg, record.cell_key(cfg, env, cfg.hardware.gpu), status, error, measurement, env,
                              kind=kind)


@pytest.fixture(scope="module")
def records():
    return [
        make("hardware=1xa100", "strategy=single", step_s=110.0),
        make("hardware=2xa100", step_s=58.0),
        make(step_s=30.0),
        make("micro_batch=8", step_s=28.0),
        make("hardware=8xa100", "micro_batch=8", step_s=16.0),
        make("hardware=4xh100", step_s=12.0),
        make("tricks=naive", step_s=600.0),  # fp32 without TF32: about 30 % MFU
        make("tricks=bf16", step_s=45.0),
        make("tricks=naive", "micro_batch=8", step_s=620.0),
        make("tricks=free-lunch-ac", "micro_batch=32", step_s=33.0, peak_gib=25.0),
        make("micro_batch=64", status="oom", kind="probe"),
        make(step_s=1.0),  # MFU above 100 %: invalid, never plotted as a time
    ]


def test_invalid_records_are_never_timed(records):
    assert all(r["valid"] for r in records[:-2]) and not records[-1]["valid"]
    assert records[-1] not in plot._timed(records)


def test_days_vs_gpus(records, tmp_path):
    path = plot.days_vs_gpus(records, tmp_path / "days.png")
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000


def test_trick_speedups_are_against_naive_in_the_same_cell(records, tmp_path):
    speedups = plot._speedups(records)
    assert speedups[("pythia-1b", "4xa100", "ddp", 16)] == pytest.approx({"free-lunch": 20.0, "bf16": 600.0 / 45.0})
    assert speedups[("pythia-1b", "4xa100", "ddp", 8)] == pytest.approx({"free-lunch": 620.0 / 28.0})
    path = plot.trick_speedups(records, tmp_path / "tricks.png")
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000


def test_memory_marks_out_of_memory(records, tmp_path):
    series = plot._memory_series(records)
    free_lunch = series[("pythia-1b", "4xa100", "ddp", "free-lunch")]
    assert free_lunch["oom"] == {64} and set(free_lunch["peak"]) == {8, 16}
    path = plot.memory_vs_micro_batch(records, tmp_path / "memory.png")
    assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000


@pytest.mark.parametrize("draw", [plot.days_vs_gpus, plot.trick_speedups, plot.memory_vs_micro_batch])
def test_nothing_to_plot_fails_clearly(draw, tmp_path):
    with pytest.raises(ValueError, match="nothing to plot.*no records at all"):
        draw([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_failed_records_are_counted_in_the_message(tmp_path):
    with pytest.raises(ValueError, match=r"needs ok, valid throughput records.*1 probe/oom/invalid"):
        plot.days_vs_gpus([make(status="oom", kind="probe")], tmp_path / "x.png")
