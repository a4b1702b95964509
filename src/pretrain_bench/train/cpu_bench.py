"""The CPU's micro-benchmarks, run by 2 ranks under torchrun for `pretrain-bench calibrate --gpu cpu`
(bench/cpu_description.py): a CPU has no datasheet, so the performance model measures what it needs.

Rank 0 first measures alone, with all the cores, while rank 1 waits: the FLOP/s of a large fp32 matmul and the rate
of the memory-bound kernels. Then both ranks, with half the cores each (as cpu-2's ranks), time gloo's all-reduce,
all-gather and reduce-scatter of a 32 MiB buffer. Rank 0 writes the four figures as JSON, named as the model's
Efficiency fields; bandwidths of collectives are bus bandwidths (bytes through each rank's link in a ring per
second).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

MATMUL_N = 2048  # ~0.1 s per product on a few cores: long enough that the best of 5 is not a timer's accident
ELEMENTS = 2**24  # 64 MiB per fp32 tensor: far beyond the caches
BUFFER_BYTES = 32 * 2**20


def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops() -> float:
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    return 2 * MATMUL_N**3 / best_seconds(lambda: a @ b)


def memory_bound_rate() -> float:
    """Bytes/s that log-softmax forward and backward, GELU and an add read and write over their total time.

    A copy would say ~3x more on a CPU: exp and erf make softmax and GELU limited by vector arithmetic there, not by
    the memory bus (on a GPU the same kernels are limited by bandwidth, which the catalogue gives)."""
    x = torch.randn(ELEMENTS // 32768, 32768)
    g, out = torch.randn_like(x), torch.empty_like(x)
    logp = torch.log_softmax(x, -1)
    kernels = [(2, lambda: torch.log_softmax(x, -1)),
               (3, lambda: torch._log_softmax_backward_data(g, logp, -1, torch.float32)),
               (2, lambda: torch.nn.functional.gelu(x)),
               (3, lambda: torch.add(x, g, out=out))]
    passes = sum(p for p, _ in kernels)
    return passes * x.numel() * 4 / sum(best_seconds(fn, 3) for _, fn in kernels)


def collective_rates() -> dict[str, float]:
    """All-reduce, and the slower of all-gather and reduce-scatter (what FSDP and ZeRO use), as bus bytes/s."""
    world = dist.get_world_size()
    full = torch.ones(BUFFER_BYTES // 4)
    shard = torch.empty(full.numel() // world)

    def seconds(fn: Callable[[], object]) -> float:
        dist.barrier()
        return best_seconds(fn)

    ring = (world - 1) / world * BUFFER_BYTES
    all_reduce = seconds(lambda: dist.all_reduce(full))
    gather = max(seconds(lambda: dist.all_gather_single(full, shard)),
                 seconds(lambda: dist.reduce_scatter_single(shard, full)))
    return {"allreduce_bandwidth": 2 * ring / all_reduce, "gather_bandwidth": ring / gather}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, threads = dist.get_rank(), torch.get_num_threads()
    measured = {}
    if rank == 0:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        measured = {"peak_flops": matmul_flops(), "memory_bandwidth": memory_bound_rate()}
        torch.set_num_threads(threads)
    measured |= collective_rates()  # the first barrier waits for rank 0's compute benchmarks
    if rank == 0:
        Path(out).write_text(json.dumps(measured))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
