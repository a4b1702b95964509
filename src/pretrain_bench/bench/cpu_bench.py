"""Micro-benchmarks that describe a CPU to the performance model, which has no datasheet for it: the FLOP/s of its
matmuls, the rate of its memory-bound kernels, and the bus bandwidth of gloo's collectives between two of its
processes. `pretrain-bench calibrate --gpu cpu` runs them (about half a minute) before it fits the rest.

torch is imported inside the functions: the launching process imports this module without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ELEMENTS = 2**24  # 64 MiB per fp32 tensor: far beyond the caches


def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops() -> float:
    """FLOP/s of a large fp32 matmul in this process (all its threads)."""
    import torch

    n = 2048  # ~0.1 s per product on a few cores: long enough that the best of 5 is not a timer's accident
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_seconds(lambda: a @ b)


def memory_bound_rate() -> float:
    """Bytes/s that the model's memory-bound kernels move here: log-softmax forward and backward, GELU and an add,
    over tensors far beyond the caches (bytes read and written over their total time).

    A copy would say ~4x more on a CPU: there exp and erf make softmax and GELU limited by vector arithmetic, not by
    the memory bus (on a GPU the same kernels are limited by bandwidth, which the catalogue gives)."""
    import torch

    x = torch.randn(ELEMENTS // 32768, 32768)
    g, out = torch.randn_like(x), torch.empty_like(x)
    logp = torch.log_softmax(x, -1)
    kernels = [(2, lambda: torch.log_softmax(x, -1)),
               (3, lambda: torch._log_softmax_backward_data(g, logp, -1, torch.float32)),
               (2, lambda: torch.nn.functional.gelu(x)),
               (3, lambda: torch.add(x, g, out=out))]
    passes = sum(p for p, _ in kernels)
    return passes * x.numel() * 4 / sum(best_seconds(fn, 3) for _, fn in kernels)


def collective_rates(timeout_s: float = 300.0) -> dict[str, float]:
    """Bus bytes/s of gloo's all-reduce and of its all-gather / reduce-scatter between 2 processes of this host,
    measured by `train/collectives_bench.py` under torchrun (each process gets half the cores, as cpu-2's ranks do)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "collectives.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, len(os.sched_getaffinity(0)) // 2)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "pretrain_bench.train.collectives_bench", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode or not out.exists():
            raise RuntimeError(f"the collective micro-benchmark failed:\n{(done.stderr or done.stdout)[-2000:]}")
        return json.loads(out.read_text())


def describe_cpu() -> dict[str, float]:
    """Every measured constant of this CPU, named as the performance model's Efficiency fields."""
    return {"peak_flops": matmul_flops(), "memory_bandwidth": memory_bound_rate(), **collective_rates()}
