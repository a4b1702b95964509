"""Time-to-target-loss on real text (the Python standard library's sources): reached, not reached, seeds."""

from __future__ import annotations

import pytest

from pretrain_bench import config
from pretrain_bench.analysis import record
from pretrain_bench.bench import launch
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def common(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return ["model=tiny", "data=stdlib", "data.max_tokens=200000", f"data.cache_dir={cache}", "hardware=cpu-1",
            "micro_batch=8", "model.recipe.steps=300", "model.recipe.lr=3e-3", "target.eval_every=10"]


def measure(store_dir, *overrides, force=False):
    return Runner(Store(store_dir), force=force).measure(config.compose(list(overrides)), kind="target")


def test_reaches_a_reachable_target_and_records_time_and_steps(tmp_path, common):
    r = measure(tmp_path, *common, "target.loss=6.6", "target.max_steps=300")
    assert r["status"] == "ok", r["error"]
    t = r["target"]
    assert t["reached"] and t["steps"] % 10 == 0 and t["steps"] < 300
    assert t["evals"][-1]["val_loss"] <= 6.6 < t["evals"][0]["val_loss"]
    assert t["time_s"] >= sum(r["timing"]["step_s"][: t["steps"] - 1])  # the clock includes every step and eval
    assert r["config"]["model"]["vocab_size"] == 4096  # sized to the locally trained tokenizer


def test_not_reached_when_the_budget_is_too_small(tmp_path, common):
    r = measure(tmp_path, *common, "target.loss=6.2", "target.max_steps=20")
    assert r["status"] == "not_reached" and not r["valid"]
    assert r["target"]["steps"] is None and r["target"]["final_val_loss"] > 6.2


def test_seeds_are_distinct_but_reproducible(tmp_path, common):
    """Seed 1 twice and seed 2, trained in turn by the same process: the same seed repeats its losses exactly (nothing
    of one cell leaks into the next: weights, batch order, RNG state), another seed does not."""
    runner = Runner(Store(tmp_path))
    cells = [runner.with_corpus(config.compose([*common, "target.loss=0.1", "target.max_steps=10", f"seed={seed}"]))
             for seed in (1, 1, 2)]  # unreachable: a fixed number of steps
    [corpus] = {path for _, path in cells}
    a, again, b = [o.measurement["losses"] for o in launch.run_cells(
        [cfg for cfg, _ in cells], tmp_path / "seeds", mode=record.Kind.TARGET.worker_mode, corpus=corpus)]
    assert len(a) == 10
    assert a == again
    assert a != b


def test_target_needs_real_text():
    with pytest.raises(config.ConfigError, match="`data`"):
        config.compose(["target.loss=3.5"])
