"""Step-time statistics and MFU arithmetic."""

from __future__ import annotations

import pytest

from pretrain_bench.spec import stats


def test_step_time_stats():
    s = stats.step_time_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 100.0 and s["n"] == 5
    assert (s["p25"], s["p75"], s["iqr"]) == (2.0, 4.0, 2.0)
    assert s["rel_iqr"] == pytest.approx(2 / 3)


def test_mfu():
    # Pythia-1B-like: 6.5 GFLOP/token at 60k tokens/s on one 989 TFLOP/s GPU is 39.4%.
    assert stats.mfu(6.5e9, 60e3, 989.4e12, 1) == pytest.approx(0.394, abs=1e-3)
    assert stats.mfu(6.5e9, 240e3, 989.4e12, 4) == pytest.approx(0.394, abs=1e-3)
    assert stats.mfu(1e6, 1e3, None, 2) is None
