"""What each of 2 ranks runs for the CPU's collective micro-benchmark (bench/cpu_bench.py): gloo's all-reduce,
all-gather and reduce-scatter of a 32 MiB buffer, the best of 5 each. Rank 0 writes their bus bandwidths (the bytes
each rank's link carries in a ring, per second) as JSON: `allreduce_bandwidth` and `gather_bandwidth` (the slower of
all-gather and reduce-scatter, which FSDP and ZeRO use)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

BUFFER_BYTES = 32 * 2**20


def seconds(fn, repeats: int = 5) -> float:
    fn()
    dist.barrier()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(out: str) -> None:
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    full = torch.ones(BUFFER_BYTES // 4)
    shard = torch.empty(full.numel() // world)
    ring = (world - 1) / world * BUFFER_BYTES  # bytes through each rank's link for a gather or a scatter
    all_reduce = seconds(lambda: dist.all_reduce(full))
    gather = max(seconds(lambda: dist.all_gather_single(full, shard)),
                 seconds(lambda: dist.reduce_scatter_single(shard, full)))
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"allreduce_bandwidth": 2 * ring / all_reduce,
                                         "gather_bandwidth": ring / gather}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
