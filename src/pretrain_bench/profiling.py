"""Profile the timed steps of a cell: a PyTorch profiler trace per rank and a short breakdown of where time goes.

The breakdown sorts every operator's self time into matmul, attention, optimizer, communication and other, and reports
idle time (the steps' wall time during which no kernel runs), so each speed-up can be explained rather than guessed.
On GPU the device (kernel) times are used, on CPU the host times. Categories can overlap in time: NCCL kernels run on
their own stream and gloo on its own thread while compute goes on, so their sum may exceed the wall time; idle time is
therefore wall time minus the union of the kernels' intervals, not minus the sum.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from pretrain_bench.config import BenchConfig
from pretrain_bench.strategies.base import Runtime

# First match wins: communication before matmul (NCCL kernels' names contain "Kernel" too), attention before matmul
# (attention kernels contain gemm-like names).
CATEGORIES = (
    ("communication", r"nccl|gloo|all_?reduce|reduce_?scatter|all_?gather|broadcast|c10d|_allgather_base"),
    ("attention", r"attention|flash|fmha|sdpa|efficient_attention|softmax"),
    ("matmul", r"\bmm\b|addmm|bmm|matmul|linear|gemm|cutlass|sm\d+_xmma|ampere_|hopper_|wgmma|cublas"),
    ("optimizer", r"adam|optimizer|_foreach|fused_adam|clip_grad|lerp|addcdiv|lr_scheduler"),
)


def start(cfg: BenchConfig, rt: Runtime, out_dir: str) -> profile:
    """A profiler that skips the warm-up steps, records the timed ones (call .step() after every step) and, when they
    are done, exports this rank's trace, keeps its per-operator totals (`prof.totals`) and, on GPU, the time during
    which any kernel ran (`prof.busy_s`)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rt.device.type == "cuda" else [])
    trace = Path(out_dir, f"trace_rank{rt.rank}.json")

    def ready(prof: profile) -> None:
        prof.export_chrome_trace(str(trace))
        use_device = rt.device.type == "cuda"
        prof.totals = {e.key: (e.self_device_time_total if use_device else e.self_cpu_time_total) / 1e6
                       for e in prof.key_averages()}
        prof.trace_path = str(trace)
        prof.busy_s = covered_seconds([(e.time_range.start, e.time_range.end) for e in prof.events()
                                       if e.device_type == DeviceType.CUDA]) if use_device else None

    prof = profile(activities=activities, schedule=schedule(wait=0, warmup=cfg.warmup_steps, active=cfg.steps),
                   on_trace_ready=ready)
    prof.start()
    return prof


def covered_seconds(intervals_us: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals in microseconds, in seconds: overlapping kernels count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals_us):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 1e6


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def breakdown(prof: profile, rt: Runtime, wall_s: float) -> dict:
    """Seconds per category over the timed steps (this rank), idle time (GPU only: the host's operators nest and
    run on several threads, so no host time is idle in the same sense), and the path of the exported trace."""
    seconds = dict.fromkeys([c for c, _ in CATEGORIES] + ["other"], 0.0)
    for key, secs in prof.totals.items():
        if not key.startswith("ProfilerStep"):
            seconds[category(key)] += secs
    on_device = rt.device.type == "cuda"
    return {"clock": "device kernels" if on_device else "host operators (self time, all threads)", "wall_s": wall_s,
            "seconds": seconds, "idle_s": max(0.0, wall_s - prof.busy_s) if on_device else None,
            "trace": prof.trace_path, "torch": torch.__version__}
