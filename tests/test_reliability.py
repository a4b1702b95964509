"""Injected faults end as the right status, with nothing lost: a hang, a NaN, an out-of-memory micro-batch.

(A killed rank, SIGTERM to a sweep, the store's failure modes and bad input are tested in test_sweep, test_store and
test_bad_input; scripts/fault_drill.py repeats all of them.)
"""

from __future__ import annotations

import subprocess
import time

import pytest

from pretrain_bench import config
from pretrain_bench.bench import search
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store

pytestmark = pytest.mark.distributed
CELL = ["model=tiny", "hardware=cpu-2", "strategy=ddp", "steps=5", "warmup_steps=1"]


def measure(tmp_path, *overrides, cell=CELL):
    return Runner(Store(tmp_path)).measure(config.compose([*cell, *overrides]))


def test_a_hung_rank_ends_as_timeout_within_the_limit(tmp_path):
    start = time.monotonic()
    r = measure(tmp_path, "+env.PRETRAIN_BENCH_FAULT='hang:rank=1:step=2'", "collective_timeout_s=3", "timeout_s=60")
    assert r["status"] == "timeout", r["error"]
    assert time.monotonic() - start < 60
    pattern = f"pretrain_bench.train.worker .*{tmp_path}"
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout == b""


def test_a_nan_loss_ends_as_diverged_at_its_step(tmp_path):
    one_rank = ["model=tiny", "hardware=cpu-1", "strategy=single", "steps=5", "warmup_steps=1"]
    r = measure(tmp_path, "+env.PRETRAIN_BENCH_FAULT='nan:step=3'", cell=one_rank)
    assert r["status"] == "diverged" and r["failed_step"] == 3 and not r["valid"]


def test_oom_is_recorded_and_the_micro_batch_search_continues_below_it(tmp_path):
    fault = "+env.PRETRAIN_BENCH_FAULT='oom:micro_batch_above=2'"
    overrides = ["model=tiny", "hardware=cpu-1", "steps=5", "warmup_steps=1", fault]
    base = search.base_config(overrides)
    methods, pruned = search.candidates(base, "naive", ["single"])
    # repeats=0: this is about the micro-batch search stepping down, not about ranking re-measured winners
    result = search.Search(Runner(Store(tmp_path)), overrides, base, repeats=0).run(methods[:1], pruned)
    assert result.best.micro_batch == 2  # 4 does not fit, 2 does: the largest that fits
    probes = [r for r in Store(tmp_path).records() if r["kind"] == "probe"]
    assert {(r["cell"]["micro_batch"], r["status"]) for r in probes} >= {(4, "oom"), (2, "ok")}  # oom is recorded
    assert "above the cap 2" in next(r["error"] for r in probes if r["status"] == "oom")


def test_a_cpu_memory_budget_ends_a_cell_past_it_as_oom(tmp_path):
    """hardware.memory_gib on CPU: a cell within the budget runs and reports its RSS growth (more than its weights,
    gradients and AdamW states); the next cell of the same processes, with a budget below those states, ends as `oom`
    naming the budget (the first cell's freed memory does not hide the second's)."""
    from pretrain_bench.analysis import record
    from pretrain_bench.analysis.perf import memory
    from pretrain_bench.analysis.perf.workload import from_config
    from pretrain_bench.bench import launch

    roomy = config.compose([*CELL, "hardware.memory_gib=4"])
    states_gib = memory.state_bytes(from_config(roomy)) / 2**30
    tight = config.compose([*CELL, f"hardware.memory_gib={states_gib / 2:.6f}"])
    fits, exceeds = launch.run_cells([roomy, tight], tmp_path)
    assert fits.status == "ok", fits.error
    growth = record.make_record(roomy, "k", "ok", None, fits.measurement, {})["memory"]["rss_growth_gib"]
    assert states_gib < growth < 4
    assert exceeds.status == "oom", exceeds.error
    assert f"hardware.memory_gib={tight.hardware.memory_gib:g} GiB" in exceeds.error
