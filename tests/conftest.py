"""Shared fixtures: composing configs and running cells through the real launcher (torchrun, gloo)."""

from __future__ import annotations

import pytest

from pretrain_bench import config
from pretrain_bench.bench import launch


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
