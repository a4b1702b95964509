"""What the performance model needs to know of a CPU, which has no datasheet: measured by 2 ranks of
`train/cpu_bench.py` under torchrun (about 10 s) for `pretrain-bench calibrate --gpu cpu`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pretrain_bench.bench import launch


def describe_cpu(timeout_s: float = 300.0) -> dict[str, float]:
    """{peak_flops, memory_bandwidth, allreduce_bandwidth, gather_bandwidth} of this host (Efficiency fields)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cpu.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(launch.threads_per_rank(2)))  # as cpu-2's ranks get them
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "pretrain_bench.train.cpu_bench", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode or not out.exists():
            raise RuntimeError(f"the CPU micro-benchmarks failed:\n{(done.stderr or done.stdout)[-2000:]}")
        return json.loads(out.read_text())
