"""Published training-time claims, checked against the GPUs' peaks and (when we have them) our own measurements.

A claim says "model M, trained on T tokens, took D days on G GPUs of type X" (or "H GPU-hours"). The FLOPs it implies
are T × models.flops_per_token(M) (docs/methodology.md), and dividing by the GPU-seconds gives the FLOP/s each GPU
must have sustained for the whole run; as a fraction of the dense peak that is the claim's implied MFU. A claim whose
implied MFU exceeds 100 % cannot hold under any implementation; one above PLAUSIBLE_MFU is above anything published
for dense training and is called optimistic. See docs/reproducing.md.

No torch: the model shape is read from its YAML with OmegaConf, so this runs on a laptop.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from pretrain_bench import config
from pretrain_bench.analysis.estimate import SECONDS_PER_DAY
from pretrain_bench.analysis.perf import plan
from pretrain_bench.analysis.perf.workload import Workload
from pretrain_bench.spec import gpus, models, stats

# An implied MFU above this is more than the best published dense training runs sustain: PaLM 540B 46.2 %
# (Chowdhery et al. 2022, Table 3), Llama 3 405B 38-43 % in BF16 on H100 (Dubey et al. 2024, Table 4), and llm.c's
# "up to ~60 %" for GPT-2 124M on A100 with hand-written kernels (Karpathy 2024, "Reproducing GPT-2 (124M) in llm.c").
PLAUSIBLE_MFU = 0.60
# Above this the claim needs more FLOP/s than the GPUs' dense datasheet peak: impossible, whatever the software.
PEAK_MFU = 1.0

EXCEEDS_PEAK, OPTIMISTIC, CONSISTENT = "exceeds peak", "optimistic", "consistent"

_FIELDS = ("id", "model", "gpu", "gpus", "days", "gpu_hours", "tokens", "method", "precision", "verification",
           "source", "notes")


@dataclass(frozen=True)
class Claim:
    """One published training-time claim (a row of results/reference/claims.csv)."""

    id: str
    model: str  # a config name in configs/model
    gpu: str  # a gpus.CATALOGUE key
    gpus: int
    days: float | None  # wall-clock days, when that is what was claimed
    gpu_hours: float | None  # GPU-hours, when that is what was claimed
    tokens: int  # tokens trained
    method: str
    precision: str  # the peak the claim is held to: bf16, fp16, tf32 or fp32
    verification: str  # how the number was checked: primary (read in the source) or secondary (a summary of it)
    source: str
    notes: str

    @property
    def gpu_seconds(self) -> float:
        if self.days is not None:
            return self.days * SECONDS_PER_DAY * self.gpus
        return self.gpu_hours * 3600

    @property
    def wall_days(self) -> float:
        """Claimed wall-clock days; for GPU-hour claims, what those hours take on the claimed GPU count."""
        return self.gpu_seconds / self.gpus / SECONDS_PER_DAY


@dataclass(frozen=True)
class Assessment:
    """What a claim implies about the hardware, and whether that is possible."""

    claim: Claim
    total_flops: float  # tokens × model FLOPs per token (PaLM / Megatron convention, attention included)
    flops_per_gpu_s: float  # FLOP/s every GPU must sustain for the whole run
    mfu: float  # the above over the dense peak of the claimed precision
    mfu_matmul_only: float  # the same counting only 6 · N_matmul: the floor any implementation must compute
    verdict: str


@dataclass(frozen=True)
class Comparison:
    """Our predicted time for a claim's tokens on the claim's hardware, from a measured throughput."""

    claim: Claim
    measured_gpu: str  # where the throughput was measured
    tokens_per_s_per_gpu: float  # on the claim's GPU: measured, or scaled by the peak ratio
    scaled: bool  # True when measured on another GPU type and scaled, not measured on the claim's own
    predicted_days: float
    ratio: float  # claimed days / our predicted days (< 1: the claim is faster than we measure)


def model_config(name: str) -> config.ModelConfig:
    """A model's shape from configs/model/<name>.yaml, typed by the schema (no Hydra: only the shape is needed)."""
    path = config.CONFIG_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        raise KeyError(f"unknown model {name!r}; known: {', '.join(config.options('model'))}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config.ModelConfig), OmegaConf.load(path)))


def _peak(gpu: str, dtype: str) -> float:
    """Dense peak FLOP/s, or a ValueError: a claim held to a peak the GPU does not have cannot be assessed."""
    spec = gpus.gpu(gpu)
    peak = spec.peak(dtype)
    if not peak:
        raise ValueError(f"{spec.name} has no {dtype} peak; it has: {', '.join(spec.peak_flops) or 'none'}")
    return peak


def _optional_float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _parse(row: dict[str, str]) -> Claim:
    """One CSV row as a Claim, rejecting rows that could not be assessed or cited."""
    claim = Claim(id=row["id"], model=row["model"], gpu=row["gpu"], gpus=int(row["gpus"]),
                  days=_optional_float(row["days"]), gpu_hours=_optional_float(row["gpu_hours"]),
                  tokens=int(row["tokens"]), method=row["method"], precision=row["precision"],
                  verification=row["verification"], source=row["source"], notes=row["notes"])
    if (claim.days is None) == (claim.gpu_hours is None):
        raise ValueError(f"claim {claim.id}: give exactly one of days and gpu_hours")
    if not claim.source.strip():
        raise ValueError(f"claim {claim.id}: no source")
    if claim.verification not in ("primary", "secondary"):
        raise ValueError(f"claim {claim.id}: verification must be primary or secondary, got {claim.verification!r}")
    model_config(claim.model)
    _peak(claim.gpu, claim.precision)
    return claim


def load_claims(path: str | Path) -> list[Claim]:
    """Every claim in a claims CSV, validated (known model and GPU, a peak for the precision, a source)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
        return [_parse(row) for row in reader]


def verdict(mfu: float) -> str:
    """`exceeds peak` above 100 % MFU, `optimistic` above PLAUSIBLE_MFU, else `consistent` (a tie takes the lower)."""
    if mfu > PEAK_MFU:
        return EXCEEDS_PEAK
    if mfu > PLAUSIBLE_MFU:
        return OPTIMISTIC
    return CONSISTENT


def assess(claim: Claim) -> Assessment:
    """The FLOPs a claim implies, the FLOP/s and MFU it needs from each GPU, and the verdict."""
    m = model_config(claim.model)
    peak = _peak(claim.gpu, claim.precision)
    per_token = models.flops_per_token(m)
    tokens_per_s = claim.tokens / (claim.gpu_seconds / claim.gpus)
    mfu = stats.mfu(per_token, tokens_per_s, peak, claim.gpus)
    floor = stats.mfu(6.0 * models.family(m).matmul_params(m), tokens_per_s, peak, claim.gpus)
    total = claim.tokens * per_token
    return Assessment(claim, total, total / claim.gpu_seconds, mfu, floor, verdict(mfu))


def scale_measurement(tokens_per_s: float, from_gpu: str, to_gpu: str, dtype: str) -> float:
    """A throughput measured on `from_gpu`, scaled by the ratio of dense peaks to `to_gpu`.

    This assumes the same MFU on both GPUs, which memory size, bandwidth and interconnect can break: callers must
    label the result as scaled, never as measured.
    """
    return tokens_per_s * _peak(to_gpu, dtype) / _peak(from_gpu, dtype)


def compare(claim: Claim, measured_tokens_per_s_per_gpu: float, measured_gpu: str) -> Comparison:
    """Our days for the claim's tokens on the claim's GPUs, from a per-GPU throughput we measured.

    Throughput is taken to scale linearly with the claim's GPU count (measure at that count to avoid relying on it).
    """
    scaled = measured_gpu != claim.gpu
    per_gpu = measured_tokens_per_s_per_gpu
    if scaled:
        per_gpu = scale_measurement(per_gpu, measured_gpu, claim.gpu, claim.precision)
    days = claim.tokens / (per_gpu * claim.gpus) / SECONDS_PER_DAY
    return Comparison(claim, measured_gpu, per_gpu, scaled, days, claim.wall_days / days)


def rows(claims: list[Claim], records: list[dict]) -> list[tuple[Assessment, Comparison | None]]:
    """Each claim's assessment, and our fastest valid measurement of its model (on its GPU type when we have one)."""
    ranked = [r for r in records if r.rankable and r.mfu is not None]
    out = []
    for claim in claims:
        ours = [r for r in ranked if r["cell"]["model"] == claim.model]
        ours.sort(key=lambda r: (r["env"]["gpu_sku"] == claim.gpu, r["throughput"]["tokens_per_s_per_device"]))
        comparison = None
        if ours:
            best = ours[-1]
            comparison = compare(claim, best["throughput"]["tokens_per_s_per_device"], best["env"]["gpu_sku"])
        out.append((assess(claim), comparison))
    return out


@dataclass(frozen=True)
class Predicted:
    """The performance model's days for a claim's tokens on its GPU type and count, best predicted method."""

    days: float
    low: float
    high: float
    method: str


def predicted(claim: Claim) -> Predicted | None:
    """Our prediction for the claim (8 GPUs per node beyond 8); None where the model cannot tell."""
    per_node = min(claim.gpus, 8)
    base = Workload(model=model_config(claim.model), gpu=gpus.gpu(claim.gpu), gpus_per_node=per_node,
                    nodes=max(1, claim.gpus // per_node))
    try:
        best = next((a for a in plan.ranked(base, claim.precision, 1) if a.fits), None)
    except config.ConfigError:
        return None
    if best is None:
        return None
    seconds = claim.tokens / best.step.units_per_s
    low, high = (seconds * s / best.step.step_s for s in best.step.interval_s)
    return Predicted(seconds / SECONDS_PER_DAY, low / SECONDS_PER_DAY, high / SECONDS_PER_DAY, best.method)


def _predicted_figure(claim: Claim) -> tuple[str, str]:
    p = predicted(claim)
    if p is None:
        return "not modelled", "–"
    ratio = p.days / claim.wall_days  # > 1: the claim is faster than our prediction
    speed = f"{ratio:.2f}× faster than predicted" if ratio >= 1 else f"{1 / ratio:.2f}× slower than predicted"
    return f"{p.days:.1f} d ({p.low:.1f}–{p.high:.1f}), {p.method}", speed


def _claimed_days(claim: Claim) -> str:
    if claim.days is not None:
        return f"{claim.days:.1f}"
    return f"≈{claim.wall_days:.1f} ({claim.gpu_hours:,.0f} GPU-h)"


def _our_figure(comparison: Comparison | None) -> tuple[str, str]:
    if comparison is None:
        return "not measured", "–"
    figure = f"{comparison.predicted_days:.1f} d"
    if comparison.scaled:
        figure += f" (scaled from {gpus.gpu(comparison.measured_gpu).name})"
    return figure, f"{comparison.ratio:.2f}"


def render(rows: Sequence[tuple[Assessment, Comparison | None]]) -> str:
    """Markdown table of assessed claims, with our figure where one was measured (None: not measured)."""
    lines = ["| claim | model | hardware | claimed days | implied MFU | verdict | our figure | ratio (claim/ours) "
             "| our prediction (interval), best method | claim vs prediction |", "|---" * 10 + "|"]
    for a, comparison in rows:
        c = a.claim
        figure, ratio = _our_figure(comparison)
        hw = f"{c.gpus}× {gpus.gpu(c.gpu).name} ({c.precision})"
        predicted_figure, speed = _predicted_figure(c)
        lines.append(f"| {c.id} | {c.model} | {hw} | {_claimed_days(c)} | {a.mfu:.1%} | {a.verdict} | {figure} "
                     f"| {ratio} | {predicted_figure} | {speed} |")
    return "\n".join(lines) + "\n"
