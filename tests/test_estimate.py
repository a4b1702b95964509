"""Recipe time: the mean step (a total is a sum), with a range only from repeated fresh runs."""

from __future__ import annotations

import json

import pytest

from pretrain_bench import config
from pretrain_bench.analysis import estimate, record, report

CELL = ["model=pythia-1b", "hardware=1xh100", "tricks=free-lunch", "micro_batch=8"]


def run(step_s, wall_s):
    cfg = config.compose(CELL)
    env = {**record.library_versions(), "gpu_sku": "h100"}
    m = {"step_s": step_s, "first_step_s": 40.0, "setup_s": 5.0, "timed_wall_s": wall_s, "losses": [10.0],
         "grad_norms": [1.0], "skipped_steps": 0, "peak_mem_bytes": 2**30, "mem_kind": "cuda_max_allocated"}
    return record.make_record(cfg, record.cell_key(cfg, env, "h100"), "ok", None, m, env)


def test_days_use_the_mean_step_not_the_median():
    r = run([30.0, 30.0, 30.0, 30.0, 60.0], wall_s=185.0)  # one slow step: median 30, mean (with gaps) 37
    est = estimate.recipe_estimate(r)
    steps = r["config"]["model"]["recipe"]["steps"]
    assert est["mean_step_s"] == pytest.approx(37.0)
    assert est["days"] == pytest.approx(steps * 37.0 / 86_400)
    assert est["runs"] == 1 and est["days_low"] is None and est["days_high"] is None  # no interval from one run


def test_the_interval_comes_from_repeated_fresh_runs():
    runs = [run([32.0] * 5, wall_s=w) for w in (160.0, 170.0, 165.0)]
    est = estimate.recipe_estimate(runs[-1], runs)
    steps = runs[0]["config"]["model"]["recipe"]["steps"]
    assert est["runs"] == 3 and est["days"] == pytest.approx(steps * 33.0 / 86_400)
    assert (est["days_low"], est["days_high"]) == pytest.approx((steps * 32.0 / 86_400, steps * 34.0 / 86_400))
    text = report.table([runs[-1]], history=runs)
    assert "3 runs" in text and "recipe days (runs)" in text


def test_the_same_run_read_twice_is_one_run():
    """A table passes the store's latest records and every record: the same run, as two dicts, counts once."""
    r = run([32.0] * 5, wall_s=165.0)
    assert estimate.recipe_estimate(r, [json.loads(json.dumps(r))])["runs"] == 1
