"""Published claims: implied-MFU arithmetic (hand-checked), verdict thresholds, scaling, comparison, the CSV itself."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain_bench import config
from pretrain_bench.analysis import reproduce
from pretrain_bench.spec import gpus, models

CLAIMS = Path(__file__).resolve().parents[1] / "results" / "reference" / "claims.csv"
PYTHIA_TOKENS = 143_000 * 1024 * 2048  # = 299,892,736,000


@pytest.fixture(scope="module")
def claims() -> dict[str, reproduce.Claim]:
    return {c.id: c for c in reproduce.load_claims(CLAIMS)}


def test_pythia_1b_flops_per_token_by_hand():
    # d = 2048, L = 16, f = 4d = 8192, V = 50,304, T = 2048:
    # N_matmul = 16 · (4·2048² + 2·2048·8192) + 2048·50,304 = 805,306,368 + 103,022,592 = 908,328,960
    # 6 · N_matmul + 12·L·d·T = 5,449,973,760 + 805,306,368 = 6,255,280,128 FLOPs per token
    assert models.flops_per_token(reproduce.model_config("pythia-1b")) == 6_255_280_128


def test_implied_mfu_4xa100_17_6_days(claims):
    # 6,255,280,128 FLOPs/token × 299,892,736,000 tokens = 1.8759131e21 FLOPs
    # ÷ (17.571102 d × 86,400 s × 4 GPUs × 312e12 FLOP/s) = 1.8759131e21 ÷ 1.8946427e21 = 0.99011
    a = reproduce.assess(claims["kh24-1b-4xa100"])
    assert a.total_flops == pytest.approx(1.8759131e21, rel=1e-7)
    assert a.flops_per_gpu_s == pytest.approx(0.99011 * 312e12, rel=1e-4)
    assert a.mfu == pytest.approx(0.99011, rel=1e-4)
    assert a.verdict == reproduce.OPTIMISTIC


def test_implied_mfu_2x3090_108_days_exceeds_peak(claims):
    # 1.8759131e21 ÷ (108 × 86,400 × 2 × 71e12 = 1.3250304e21) = 1.41575
    # Even counting only 6 · N_matmul (5,449,973,760 FLOPs/token) it is 1.41575 × 5.44997/6.25528 = 1.2335 > 1.
    a = reproduce.assess(claims["kh24-1b-2x3090"])
    assert a.mfu == pytest.approx(1.41575, rel=1e-4)
    assert a.mfu_matmul_only == pytest.approx(1.2335, rel=1e-3)
    assert a.verdict == reproduce.EXCEEDS_PEAK


def test_implied_mfu_4xh100_8_days(claims):
    # 1.8759131e21 ÷ (8 × 86,400 × 4 × 989.4e12 = 2.7354931e21) = 0.68577
    a = reproduce.assess(claims["kh24-1b-4xh100"])
    assert a.mfu == pytest.approx(0.68577, rel=1e-4)
    assert a.verdict == reproduce.OPTIMISTIC


def test_implied_mfu_from_gpu_hours(claims):
    # Pythia Table 5, 1B: 4,830 A100-hours = 17,388,000 GPU-s; 1.8759131e21 ÷ (17,388,000 × 312e12) = 0.34579
    c = claims["biderman23-1b"]
    assert c.gpu_seconds == 4830 * 3600
    assert c.wall_days == pytest.approx(4830 / 64 / 24)
    a = reproduce.assess(c)
    assert a.mfu == pytest.approx(0.34579, rel=1e-4)
    assert a.verdict == reproduce.CONSISTENT


@pytest.mark.parametrize(("mfu", "expected"), [
    (0.0, reproduce.CONSISTENT),
    (0.60, reproduce.CONSISTENT),  # the ceiling itself is still plausible
    (0.6000001, reproduce.OPTIMISTIC),
    (1.0, reproduce.OPTIMISTIC),  # exactly the peak is impossible in practice but not above it
    (1.0000001, reproduce.EXCEEDS_PEAK),
])
def test_verdict_boundaries(mfu, expected):
    assert reproduce.verdict(mfu) == expected


def test_verdict_thresholds_are_the_documented_ones():
    assert (reproduce.PLAUSIBLE_MFU, reproduce.PEAK_MFU) == (0.60, 1.0)


def test_scale_measurement_by_dense_peaks():
    # A100 → H100 in bf16: × 989.4 / 312 = × 3.17115
    assert reproduce.scale_measurement(10_000, "a100-80gb", "h100", "bf16") == pytest.approx(31_711.54, rel=1e-6)
    assert reproduce.scale_measurement(31_711.54, "h100", "a100-80gb", "bf16") == pytest.approx(10_000, rel=1e-6)
    assert reproduce.scale_measurement(10_000, "a100-40gb", "a100-80gb", "bf16") == 10_000  # same compute
    assert reproduce.scale_measurement(10_000, "h100", "rtx3090", "fp16") == pytest.approx(10_000 * 71 / 989.4)


@pytest.mark.parametrize(("from_gpu", "to_gpu", "dtype"), [("h100", "v100", "bf16"), ("cpu", "h100", "bf16")])
def test_scale_measurement_refuses_missing_peaks(from_gpu, to_gpu, dtype):
    with pytest.raises(ValueError, match="no bf16 peak"):
        reproduce.scale_measurement(1.0, from_gpu, to_gpu, dtype)


def test_compare_on_the_claims_own_gpu(claims):
    # 299,892,736,000 tokens ÷ (30,000 tok/s/GPU × 4 GPUs) = 2,499,106.13 s = 28.9248 days;
    # ratio claim/ours = 17.571102 / 28.9248 = 0.60747
    c = claims["kh24-1b-4xa100"]
    r = reproduce.compare(c, 30_000, "a100-80gb")
    assert not r.scaled and r.tokens_per_s_per_gpu == 30_000
    assert r.predicted_days == pytest.approx(28.9248, rel=1e-5)
    assert r.ratio == pytest.approx(0.60747, rel=1e-4)


def test_compare_scaled_from_another_gpu_is_flagged(claims):
    # 60,000 tok/s/GPU on H100 → × 312 / 989.4 = 18,920.56 on A100;
    # 299,892,736,000 ÷ (18,920.56 × 4) = 3,962,525 s = 45.8626 days
    r = reproduce.compare(claims["kh24-1b-4xa100"], 60_000, "h100")
    assert r.scaled and r.measured_gpu == "h100"
    assert r.tokens_per_s_per_gpu == pytest.approx(18_920.56, rel=1e-6)
    assert r.predicted_days == pytest.approx(45.8626, rel=1e-5)


def test_compare_at_the_claims_own_throughput_gives_ratio_one(claims):
    for c in claims.values():
        own = c.tokens / (c.gpu_seconds / c.gpus) / c.gpus
        assert reproduce.compare(c, own, c.gpu).ratio == pytest.approx(1.0)


def test_render(claims):
    a, h = reproduce.assess(claims["kh24-1b-4xa100"]), reproduce.assess(claims["biderman23-1b"])
    table = reproduce.render([(a, reproduce.compare(a.claim, 60_000, "h100")), (h, None)])
    lines = table.splitlines()
    assert lines[0].startswith("| claim | model | hardware | claimed days | implied MFU | verdict | our figure |")
    assert "| kh24-1b-4xa100 | pythia-1b | 4× A100 SXM4 80GB (bf16) | 17.6 | 99.0% | optimistic |" in lines[2]
    assert "45.9 d (scaled from H100 SXM5 80GB)" in lines[2]
    assert "≈3.1 (4,830 GPU-h)" in lines[3] and "not measured" in lines[3]


def test_every_claim_is_sourced_and_known(claims):
    assert len(claims) == len(list(csv.DictReader(CLAIMS.open()))), "claim ids must be unique"
    models_known = set(config.options("model"))
    for c in claims.values():
        assert c.source.strip() and c.verification in ("primary", "secondary")
        assert c.model in models_known and c.gpu in gpus.CATALOGUE
        assert (c.days is None) != (c.gpu_hours is None)
        assert gpus.gpu(c.gpu).peak(c.precision)


def test_pythia_full_recipe_token_count(claims):
    assert PYTHIA_TOKENS == 299_892_736_000
    assert {c.tokens for c in claims.values()} == {PYTHIA_TOKENS}


def test_pythia_table_5_rows_sum_to_its_total(claims):
    # Table 5's total is 136,070 A100-hours; 4 suites × 136,070 = the 544,280 stated in Appendix D's text.
    rows = [c.gpu_hours for c in claims.values() if c.id.startswith("biderman23-")]
    assert len(rows) == 8 and sum(rows) == 136_070


def _write(path: Path, **overrides: str) -> Path:
    row = {"id": "x", "model": "pythia-1b", "gpu": "h100", "gpus": "1", "days": "1", "gpu_hours": "",
           "tokens": "1000", "method": "", "precision": "bf16", "verification": "primary", "source": "a paper",
           "notes": "", **overrides}
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return path


@pytest.mark.parametrize(("overrides", "error", "match"), [
    ({"source": " "}, ValueError, "no source"),
    ({"gpu_hours": "5"}, ValueError, "exactly one of days and gpu_hours"),
    ({"days": ""}, ValueError, "exactly one of days and gpu_hours"),
    ({"verification": "recalled"}, ValueError, "primary or secondary"),
    ({"model": "gpt5-1t"}, KeyError, "unknown model"),
    ({"gpu": "mi300x"}, KeyError, "unknown GPU type"),
    ({"gpu": "v100"}, ValueError, "no bf16 peak"),
])
def test_load_claims_rejects_unusable_rows(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        reproduce.load_claims(_write(tmp_path / "claims.csv", **overrides))


def test_load_claims_reads_a_valid_row(tmp_path):
    [c] = reproduce.load_claims(_write(tmp_path / "claims.csv"))
    assert (c.id, c.gpus, c.days, c.gpu_hours, c.tokens) == ("x", 1, 1.0, None, 1000)


def test_no_torch_import():
    code = ("import sys; from pretrain_bench.analysis import reproduce as r; "
            f"[r.assess(c) for c in r.load_claims({str(CLAIMS)!r})]; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
