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
from pretrain_bench.train.strategies.base import Runtime

# Matched against CPU operator names (CPU runs) and kernel names (GPU runs). First match wins: communication before
# matmul (NCCL kernels' names contain "Kernel" too), attention before matmul (cutlass attention kernels); the
# cross-entropy's log-softmax is not attention.
CATEGORIES = (
    ("communication", r"nccl|gloo|all_?reduce|reduce_?scatter|all_?gather|broadcast|c10d"),
    ("attention", r"^(?!.*log_?softmax).*(attention|flash|fmha|sdpa|softmax)"),
    ("matmul", r"(?<![a-z])mm(?![a-z])|addmm|bmm|matmul|linear|gemm|cutlass|xmma|wgmma|nvjet|cublas|ampere_|hopper_"),
    ("optimizer", r"adam|optimizer|_foreach|multi_tensor_apply|clip_grad|lerp|addcdiv|lr_scheduler"),
)


def start(cfg: BenchConfig, rt: Runtime, out_dir: str) -> profile:
    """A profiler that skips the warm-up steps, records the timed ones (call .step() after every step) and, when they
    are done, exports this rank's trace and keeps its totals per operator or kernel (`prof.totals`) and, on GPU, the
    time during which any kernel ran (`prof.busy_s`)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rt.device.type == "cuda" else [])
    trace = Path(out_dir, f"trace_rank{rt.rank}.json")

    def ready(prof: profile) -> None:
        prof.export_chrome_trace(str(trace))
        prof.trace_path = str(trace)
        if rt.device.type == "cuda":
            prof.totals, prof.busy_s = kernel_totals(prof.events())
        else:
            prof.totals = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}

    prof = profile(activities=activities, schedule=schedule(wait=0, warmup=cfg.warmup_steps, active=cfg.steps),
                   on_trace_ready=ready)
    prof.start()
    return prof


def kernel_totals(events) -> tuple[dict[str, float], float]:
    """Seconds per kernel name, and seconds during which any kernel ran, from the profiler's events.

    Only the device events themselves count: a CPU operator's `self_device_time_total` repeats its kernels' time (each
    kernel would count twice), and GPU user annotations (`ProfilerStep#N`, FSDP2's `FSDP::…` ranges) span kernels
    rather than being work. torch's own table sums device time the same way (`profiler_util._build_table`).
    """
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    totals: dict[str, float] = {}
    for e in kernels:
        totals[e.name] = totals.get(e.name, 0.0) + (e.time_range.end - e.time_range.start) / 1e6
    return totals, covered_seconds([(e.time_range.start, e.time_range.end) for e in kernels])


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
