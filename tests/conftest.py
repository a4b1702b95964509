"""Shared fixtures: composing configs and running cells through the real launcher (torchrun, gloo)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from pretrain_bench import config
from pretrain_bench.bench import launch

# Property tests: 100 examples in `make test`; `make test-fast` (--hypothesis-profile=fast) draws 25.
settings.register_profile("full", max_examples=100, deadline=None)
settings.register_profile("fast", max_examples=25, deadline=None)
settings.load_profile("full")


def _own_cores() -> None:
    """Under xdist (`make test`: -n 2), each worker keeps a core of its own, and the ranks its tests start inherit it
    (launch.worker_env gives them threads for that share). Sharing every core, two workers' OpenMP threads spin-wait
    on each other: a 1-process cell next to one busy core ran 7x slower here (145 s instead of 20 s)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if worker and 1 < count <= len(cores):
        try:
            os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) % count::count])
        except OSError:  # a sandbox that forbids it: the suite still runs, only slower
            pass


_own_cores()


# The longest files first (durations measured on 2 cores), so that `make test` (--dist loadfile
# --no-loadscope-reorder: whole files, handed to the two workers in this order) does not end on one of them alone;
# the SLURM tests mostly wait on their jobs, so they start at once, beside CPU-bound work.
LONGEST_FIRST = ("test_slurm.py", "test_sweep.py", "test_strategies.py", "test_search.py", "test_cli.py",
                 "test_reliability.py", "test_meta_init.py", "test_compile.py", "test_target.py", "test_bad_input.py",
                 "test_fast_methods.py", "test_peers.py", "test_numerics.py", "test_install.py", "test_progress.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _launches_only_when_marked(request, monkeypatch):
    """A test that starts torchrun workers must say so (`distributed`): `make test-fast` deselects those, and here
    any launch from an unmarked test fails it, so the fast tier can never silently start workers."""
    if request.node.get_closest_marker("distributed") is None:
        def refuse(*args, **kwargs):
            raise AssertionError("this test starts torchrun workers: mark it @pytest.mark.distributed")

        monkeypatch.setattr(launch, "run_cells", refuse)


@pytest.fixture
def compose():
    return config.compose


@pytest.fixture
def run_cell(tmp_path):
    """Run one cell in real worker processes and return its outcome (fails the test on a non-ok status)."""

    def run(*overrides: str, expect: str = "ok") -> launch.CellOutcome:
        cfg = config.compose(list(overrides))
        outcome = launch.run_cell(cfg, tmp_path / f"cell{len(list(tmp_path.iterdir()))}")
        assert outcome.status == expect, outcome.error
        return outcome

    return run


@pytest.fixture(scope="module")
def run_batch(tmp_path_factory):
    """Several cells of one hardware layout trained in turn in one launch (one process start and import for all);
    returns their outcomes in order and fails the test if any is not ok."""

    def run(cells: list[list[str]]) -> list[launch.CellOutcome]:
        outcomes = launch.run_cells([config.compose(c) for c in cells], tmp_path_factory.mktemp("batch"))
        for cell, outcome in zip(cells, outcomes, strict=True):
            assert outcome.status == "ok", f"{cell}: {outcome.error}"
        return outcomes

    return run
