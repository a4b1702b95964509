"""Every backend computes the same training: same seed and global batch give the same loss and gradient-norm curve.

Tolerance: in fp32, backends differ only in the order of floating-point reductions (all-reduce vs reduce-scatter,
bucket order, flattened ZeRO buffers). Such reordering changes a float32 sum by a few ulps (relative ~1e-7) per
step; Adam's update normalises gradients, so tiny differences can grow over steps, but over 7 steps they stay far
below 1e-5 relative. A real bug (a missing 1/accumulation factor, a double all-reduce, a skipped sync, a wrong data
shard) moves the loss or the gradient norm by whole percents, so rtol=1e-5 separates the two by orders of magnitude.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.distributed

# A learning rate large enough that the weights move visibly within the run.
COMMON = ("model=tiny", "model.recipe.lr=1e-2", "model.recipe.warmup_ratio=0", "tricks=naive", "steps=5",
          "warmup_steps=2", "seed=7")
RTOL = 1e-5


def curves(outcome):
    return outcome.measurement["losses"], outcome.measurement["grad_norms"]


STRATEGIES = ("ddp", "fsdp", "fsdp-grad-op", "zero1", "zero2", "zero3", "zero2-offload", "zero3-offload")
SPLITS = (4, 1, 2, 8)  # micro-batch sizes of the single-process runs; 4 (accumulation 2) is the reference


@pytest.fixture(scope="module")
def single(run_batch):
    """The single-process runs at every micro-batch split, in one launch: {micro_batch: (losses, norms)}."""
    outcomes = run_batch([[*COMMON, "hardware=cpu-1", "strategy=single", f"micro_batch={mb}"] for mb in SPLITS])
    return {mb: curves(o) for mb, o in zip(SPLITS, outcomes, strict=True)}


@pytest.fixture(scope="module")
def reference(single):
    return single[4]


@pytest.fixture(scope="module")
def two_ranks(run_batch):
    """Every 2-rank backend on the same cell, trained in turn by the same two ranks (one launch), and DDP once more
    at micro-batch 1 (accumulation 4): {(strategy, micro_batch): (losses, norms)}."""
    cells = [(s, 2) for s in STRATEGIES] + [("ddp", 1)]
    outcomes = run_batch([[*COMMON, "hardware=cpu-2", f"strategy={s}", f"micro_batch={mb}"] for s, mb in cells])
    return {cell: curves(o) for cell, o in zip(cells, outcomes, strict=True)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_backends_match_single_process(two_ranks, reference, strategy):
    losses, norms = two_ranks[strategy, 2]
    ref_losses, ref_norms = reference
    assert losses == pytest.approx(ref_losses, rel=RTOL)
    assert norms == pytest.approx(ref_norms, rel=RTOL)
    assert max(losses) - min(losses) > 0.01  # the updates are large enough to move the loss


@pytest.mark.parametrize("micro_batch", [1, 2, 8])
def test_micro_batch_times_accumulation_splits_agree(single, reference, micro_batch):
    """8 sequences per step as 1×8, 2×4, 4×2 (the reference) and 8×1 micro-batch × accumulation."""
    losses, norms = single[micro_batch]
    assert losses == pytest.approx(reference[0], rel=RTOL)
    assert norms == pytest.approx(reference[1], rel=RTOL)


def test_ddp_with_accumulation_matches(two_ranks, reference):
    """2 ranks × micro-batch 1 × accumulation 4: no_sync on all but the last micro-batch must not change the math."""
    losses, _ = two_ranks["ddp", 1]
    assert losses == pytest.approx(reference[0], rel=RTOL)


def test_two_nodes_match_one_node(run_cell):
    """2 "nodes" × 2 processes (torchrun c10d rendezvous on localhost) train exactly like 1 node × 4 processes."""
    common = (*COMMON, "strategy=ddp", "micro_batch=1")
    one = curves(run_cell(*common, "hardware=cpu-4"))
    two = curves(run_cell(*common, "hardware=cpu-2x2", "multinode=local"))
    assert two[0] == pytest.approx(one[0], rel=RTOL) and two[1] == pytest.approx(one[1], rel=RTOL)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2"])
def test_bf16_backends_track_the_fp32_curve(run_cell, reference, strategy):
    """bf16 (autocast, FSDP2 MixedPrecisionPolicy or DeepSpeed bf16) keeps ~3 significant digits per element; the
    loss is a mean over 512 tokens computed in fp32, so it stays within 1e-3 of fp32 over these steps, while a
    precision bug (a wrong loss scale, a cast that drops gradients) moves it by percents or to NaN."""
    losses, norms = curves(run_cell(*COMMON, "hardware=cpu-2", f"strategy={strategy}", "micro_batch=2",
                                    "tricks.precision=bf16"))
    assert losses == pytest.approx(reference[0], rel=1e-3)
    assert norms == pytest.approx(reference[1], rel=5e-2)
