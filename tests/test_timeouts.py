"""Time-outs that fit the work: from the measured probe (else an estimate) times the steps plus an allowance, printed
before the run; a cell that timed out is not re-run at the same limit, only with a larger one or --force."""

from __future__ import annotations

import dataclasses

import pytest
from test_record import measurement

from pretrain_bench import config
from pretrain_bench.analysis import record
from pretrain_bench.bench import launch, runner
from pretrain_bench.bench.search import probe_config
from pretrain_bench.bench.store import Store

CELL = ["model=tiny", "hardware=cpu-2", "strategy=ddp", "steps=5", "warmup_steps=1", "model.global_batch=8",
        "micro_batch=1"]


def stored(r: runner.Runner, cfg, status: str, kind: str, step_s: float | None = None) -> dict:
    result = record.make_record(cfg, r.key(cfg), status, None if status == "ok" else "no result",
                                measurement([step_s] * 5) if step_s else None, {}, kind=kind)
    r.store.append(result)
    return result


def test_the_time_out_comes_from_the_measured_probe_else_the_estimate(tmp_path):
    said = []
    r = runner.Runner(Store(tmp_path), say=said.append)
    cfg = config.compose(CELL)
    assert cfg.timeout_s is None and cfg.grad_accum == 4
    estimated, why = r.with_timeout(cfg, "throughput")
    assert "(estimate)" in why and 300 <= estimated.timeout_s <= 310  # the tiny model's steps take milliseconds
    probe = stored(r, probe_config(cfg), "ok", "probe", step_s=2.0)
    step_s = probe["timing"]["honest_stats"]["median"] * 4 / 2  # the probe ran accumulation 2, the cell runs 4
    sized, why = r.with_timeout(cfg, "throughput")
    assert "(measured probe)" in why
    assert sized.timeout_s == pytest.approx(300 + 3 * 6 * step_s, abs=10) and sized.timeout_s % 10 == 0
    compiled, why = r.with_timeout(dataclasses.replace(cfg, tricks=dataclasses.replace(cfg.tricks, compile=True)),
                                   "throughput")  # another cell (no probe yet): the estimate and a compile allowance
    assert compiled.timeout_s == estimated.timeout_s + 600 and "compile" in why and "(estimate)" in why
    assert r.with_timeout(dataclasses.replace(cfg, timeout_s=77), "throughput") == (
        dataclasses.replace(cfg, timeout_s=77), "as given")


def test_a_timed_out_cell_is_not_rerun_at_the_same_limit(tmp_path, monkeypatch):
    launched = []

    def fake_run_cell(cfg, work_dir, mode="throughput", corpus=None, watcher=None):
        launched.append(cfg.timeout_s)
        return launch.CellOutcome("timeout", f"no result after timeout_s={cfg.timeout_s} s", None)

    monkeypatch.setattr(launch, "run_cell", fake_run_cell)
    said = []
    r = runner.Runner(Store(tmp_path), say=said.append)
    cfg = config.compose(CELL)
    first = r.measure(cfg)
    assert first["status"] == "timeout" and launched == [first["config"]["timeout_s"]]
    assert "time-out" in said[0] and "(estimate)" in said[0]  # said before the run
    assert r.measure(cfg) == first and len(launched) == 1  # resume: the same limit would time out again
    larger = dataclasses.replace(cfg, timeout_s=first["config"]["timeout_s"] + 100)
    assert r.measure(larger)["config"]["timeout_s"] == larger.timeout_s and len(launched) == 2
    runner.Runner(Store(tmp_path), force=True, say=said.append).measure(cfg)
    assert len(launched) == 3
