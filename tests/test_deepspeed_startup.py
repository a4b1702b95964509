"""DeepSpeed's comm backend starts on a CPU without JIT-building its inference-only shared-memory all-reduce op
(strategies/zero.py: ~50 s per rank in a new environment), and its training collectives still work."""

from __future__ import annotations

import torch
import torch.distributed as dist

from pretrain_bench.train.strategies import zero


def test_deepspeed_starts_on_a_cpu_without_building_the_shm_op(tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    import deepspeed.comm.comm as ds_comm

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        zero.init_distributed("gloo")
        assert ds_comm.cdb.shm_comm_op is None
        x = torch.ones(4)
        ds_comm.all_reduce(x)
        assert torch.equal(x, torch.ones(4))
    finally:
        ds_comm.cdb = None  # DeepSpeed's global backend must not outlive this process group
        dist.destroy_process_group()
