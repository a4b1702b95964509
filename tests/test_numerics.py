"""`numerics`: a faster method's loss curve judged against the baseline's seed-to-seed spread."""

from __future__ import annotations

import pytest

from pretrain_bench import cli
from pretrain_bench.analysis import numerics

BASELINE = [[3.0, 2.5, 2.00], [3.1, 2.6, 2.10], [2.9, 2.4, 1.90]]  # final losses (window 1): 2.0 ± 0.1


@pytest.mark.parametrize("curve, within, in_band", [
    ([3.0, 2.5, 2.05], True, 1.0),   # half a std off: inside
    ([3.0, 2.5, 2.19], True, 2 / 3),  # 1.9 std: inside the spread, outside the min-max band at the end
    ([3.0, 2.5, 2.30], False, 2 / 3),  # 3 std: outside
])
def test_judge_uses_two_standard_deviations_of_the_seeds(curve, within, in_band):
    v = numerics.judge("m", curve, BASELINE, window=1)
    assert (v.baseline_mean, v.within_spread, v.in_band) == (pytest.approx(2.0), within, pytest.approx(in_band))
    assert v.baseline_std == pytest.approx(0.1)


def test_judge_needs_two_baseline_seeds():
    with pytest.raises(ValueError, match="2 seeds"):
        numerics.judge("m", [1.0], [[1.0]])


def test_table_marks_a_method_outside_the_spread():
    verdicts = [numerics.judge("a", [3.0, 2.5, 2.05], BASELINE, 1), numerics.judge("b", [3.0, 2.5, 2.3], BASELINE, 1)]
    table = numerics.markdown("t", "bf16", 3, 1, verdicts, {"a": "10 tokens/s"})
    assert "| a | 2.0500 | 2.0000 ± 0.1000 | +0.50 | 100% | yes | 10 tokens/s |" in table
    assert "| b |" in table and "**no**" in table


@pytest.mark.parametrize("args, key", [(["methods=[flce]", "seeds=1"], "seeds"), (["seeds=2"], "methods")])
def test_bad_numerics_options_name_the_key(args, key, tmp_path, capsys):
    assert cli.main(["numerics", "model=tiny", f"store={tmp_path}", *args]) == 2
    assert f"`{key}`" in capsys.readouterr().err


@pytest.mark.distributed
def test_numerics_writes_the_table_and_the_curves(tmp_path):
    """Two baseline seeds on a tiny model; the method is the baseline itself, whose first-seed run the store already
    holds (no third launch): it lies inside the spread by construction."""
    code = cli.main(["numerics", "model=tiny", "hardware=cpu-1", "strategy=single", "tricks=naive", "steps=5",
                     "warmup_steps=1", "seeds=2", "methods=[naive]", f"store={tmp_path}"])
    table = (tmp_path / "numerics-tiny-cpu-1.md").read_text()
    assert code == 0 and "| naive |" in table and "| yes |" in table
    assert len(list((tmp_path / "runs").iterdir())) == 2
    assert (tmp_path / "numerics-tiny-cpu-1.png").stat().st_size > 1000
