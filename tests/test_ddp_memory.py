"""DDP keeps one copy of the gradients during accumulation: `.grad` stays a view into the communication buckets.

Measured in one process (gloo, world 1: DDP's reducer and buckets work as on many ranks) by the bytes of distinct
gradient storages alive after each micro-batch's backward: the buckets (which the reducer holds for the whole run)
plus any `.grad` that is not a view into them. On CPU there is no allocator high-water mark to read, and these
storages are exactly what the GPU allocator's peak would count twice.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from pretrain_bench import config
from pretrain_bench.train import synthetic
from pretrain_bench.train.strategies.base import Runtime
from pretrain_bench.train.strategies.ddp import DDPStrategy


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield Runtime(device=torch.device("cpu"), rank=0, local_rank=0, world=1)
    dist.destroy_process_group()


def gradient_bytes_peak(strategy, cfg, rt) -> tuple[int, int]:
    """(peak bytes of distinct gradient storages during the third step's accumulation, one gradient copy)."""
    from pretrain_bench.train import tricks

    torch.manual_seed(0)
    model = strategy.wrap(tricks.build_model(cfg, compile_blocks=False))
    params = [p for p in model.parameters() if p.requires_grad]
    one_copy = sum(p.numel() * p.element_size() for p in params)
    data = synthetic.synthetic(cfg.model, cfg.seed, rt.device)
    buckets: dict[int, int] = {}
    peak = 0
    for step in range(3):
        micro = data.micro_batches(step, 0, 1, cfg.micro_batch)
        for i, batch in enumerate(micro):
            is_last = i == len(micro) - 1
            with strategy.micro_batch(is_last):
                strategy.backward(model(**synthetic.as_inputs(batch)).loss, len(micro), is_last)
            storages = {p.grad.untyped_storage().data_ptr(): p.grad.untyped_storage().nbytes() for p in params
                        if p.grad is not None}
            if step == 1 and is_last:
                buckets = storages  # DDP rebuilds its buckets once, in step 1; after a sync every .grad is a view
            if step == 2:
                peak = max(peak, sum({**buckets, **storages}.values()))
        strategy.step()
    return peak, one_copy


def test_ddp_accumulates_in_the_buckets_without_a_second_gradient_copy(one_rank, monkeypatch):
    cfg = config.compose(["model=tiny", "hardware=cpu-1", "strategy=single", "micro_batch=2", "tricks=naive"])
    assert cfg.grad_accum > 1
    peak, one_copy = gradient_bytes_peak(DDPStrategy(cfg, one_rank), cfg, one_rank)
    assert peak == pytest.approx(one_copy, rel=0.05)
    # The measurement sees the copy: with set_to_none the fresh .grad sits beside the buckets.
    monkeypatch.setattr(DDPStrategy, "grads_to_none", True)
    peak_to_none, _ = gradient_bytes_peak(DDPStrategy(cfg, one_rank), cfg, one_rank)
    assert peak_to_none == pytest.approx(2 * one_copy, rel=0.05)
