"""Synthetic batches: a pure function of (seed, step), whatever the world size and micro-batch split."""

from __future__ import annotations

import pytest
import torch

from pretrain_bench import config
from pretrain_bench.train import synthetic

CPU = torch.device("cpu")


def gathered(source, step: int, world: int, micro_batch: int) -> dict:
    parts = [synthetic.as_inputs(b) for rank in range(world)
             for b in source.micro_batches(step, rank, world, micro_batch)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.parametrize("name", ["tiny", "tiny-roberta", "tiny-vit"])
def test_any_split_gives_the_same_global_batch(name):
    m = config.compose([f"model={name}"]).model
    source = synthetic.synthetic(m, seed=3, device=CPU)
    whole = gathered(source, step=5, world=1, micro_batch=m.global_batch)
    for world, micro in ((2, 1), (2, 2), (4, 1), (1, 4)):
        split = gathered(source, step=5, world=world, micro_batch=micro)
        assert all(torch.equal(whole[k], split[k]) for k in whole)
    other = gathered(source, step=6, world=1, micro_batch=m.global_batch)
    assert not torch.equal(whole["labels"], other["labels"])


def test_masking_follows_the_roberta_recipe():
    """round(15 % of T) labelled positions per sequence; of those ≈ 80 % mask token, 10 % random, 10 % unchanged;
    unlabelled positions keep their token and carry the ignore label."""
    source = synthetic.MaskedTokens(vocab_size=1000, seq_len=200, global_batch=256, seed=0, device=CPU, mask_prob=0.15)
    batch = source.global_batch_at(0)
    ids, labels = batch["input_ids"], batch["labels"]
    original = synthetic.SyntheticTokens(999, 200, 256, 0, CPU).global_batch_at(0)
    chosen = labels != synthetic.IGNORE
    assert (chosen.sum(dim=1) == 30).all()
    assert torch.equal(labels[chosen], original[chosen])
    assert torch.equal(ids[~chosen], original[~chosen])
    masked = (ids[chosen] == source.mask_id).float().mean()
    kept = (ids[chosen] == original[chosen]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1 + 0.1 / 999, abs=0.02)
    assert (original < source.mask_id).all()  # text never contains the mask token


def test_images_come_from_a_pool_made_once():
    m = config.compose(["model=tiny-vit"]).model
    source = synthetic.synthetic(m, seed=0, device=CPU)
    batch = source.micro_batches(0, 0, 1, m.global_batch)[0]
    assert batch["pixel_values"].shape == (m.global_batch, 3, m.image_size, m.image_size)
    assert int(batch["labels"].max()) < m.num_classes
    assert torch.equal(batch["pixel_values"][0], source.pool[0])
