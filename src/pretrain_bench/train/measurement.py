"""What a rank measures besides the loop's step logs, and the one place that turns step logs into a measurement
(for our loop and for the HF Trainer peer alike): slowest-rank step times, warm-up dropped the same way, memory,
environment."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import re
import resource
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain_bench import config
from pretrain_bench.spec import gpus
from pretrain_bench.train.loop import Observer, StepLog
from pretrain_bench.train.strategies.base import Runtime


def device_env(rt: Runtime, m: config.ModelConfig) -> dict:
    kernels = {}
    if m.family == "mamba":  # transformers picks the fused kernels when installed (spec.hf_configs.mamba_config)
        fused = importlib.util.find_spec("mamba_ssm") and importlib.util.find_spec("causal_conv1d")
        kernels["mamba_scan"] = "fused (mamba_ssm, causal_conv1d)" if fused else "pytorch"
    if rt.device.type == "cuda":
        name = torch.cuda.get_device_name(rt.device)
        return {"device_name": name, "gpu_sku": gpus.identify(name), "cuda": torch.version.cuda,
                "device_count": torch.cuda.device_count(), **kernels}
    return {"device_name": "cpu", "gpu_sku": "cpu", "cuda": None, "torch_threads": torch.get_num_threads(), **kernels}


def start_training_peak(rt: Runtime) -> int | None:
    """The CUDA allocator's high-water mark so far (set-up: build, wrap, DeepSpeed's buffers), then a fresh one, so
    that `memory_fields` reports what training needs (warm-up and timed steps: compile, optimizer state, activations)
    rather than a transient of set-up. None on CPU, where the max RSS of a process cannot be reset."""
    if rt.device.type != "cuda":
        return None
    setup = torch.cuda.max_memory_allocated(rt.device)
    torch.cuda.reset_peak_memory_stats(rt.device)
    return setup


def memory_fields(rt: Runtime, setup_peak: int | None, budget: MemoryBudget | None = None) -> dict:
    """Peak bytes over all ranks. On GPU: the allocator's high-water marks of allocated bytes (what tensors need) and
    of reserved bytes (what the caching allocator held, fragmentation included: what decides an OOM), set-up's own
    peak and the allocator's retries; on CPU the process's max RSS, and under a budget its growth since the build."""
    def most(value: float) -> int:
        peak = torch.tensor(float(value), device=rt.device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return int(peak.item())

    if rt.device.type != "cuda":
        out = {"peak_mem_bytes": most(_max_rss_bytes()), "mem_kind": "cpu_max_rss"}
        return {**out, "rss_growth_bytes": most(budget.growth())} if budget else out
    out = {"peak_mem_bytes": most(torch.cuda.max_memory_allocated(rt.device)), "mem_kind": "cuda_max_allocated",
           "peak_reserved_bytes": most(torch.cuda.max_memory_reserved(rt.device)),
           # cudaMalloc failures the caching allocator survived by freeing its cache and retrying: near the memory
           # limit these stall steps, which can make the largest micro-batch slower than the next smaller one
           "num_alloc_retries": most(torch.cuda.memory_stats(rt.device).get("num_alloc_retries", 0))}
    if setup_peak is not None:
        out["setup_peak_mem_bytes"] = most(setup_peak)
    return out


def slowest_rank(rows: list[list[float]], rt: Runtime) -> torch.Tensor:
    """Per-step times, maximum over ranks: a step ends when the slowest rank ends it."""
    seconds = torch.tensor(rows, dtype=torch.float64, device=rt.device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    return seconds


def compile_counters() -> dict:
    """What torch.compile did in this process: graphs compiled, graph breaks (with their first reasons) and
    recompilations (one per guard failure that led to a new compile). A per-block compile should show no breaks
    and no recompiles; either means eager code or repeated compiles inside the timed steps."""
    from torch._dynamo.utils import counters, guard_failures

    breaks = counters["graph_break"]
    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(breaks.values())),
            "recompiles": sum(len(reasons) for reasons in guard_failures.values()),
            "break_reasons": sorted(breaks)[:5]}


def build(cfg: config.BenchConfig, rt: Runtime, logs: list[StepLog], warmup: int, setup_s: float,
          setup_peak: int | None, legacy_s: list[float] | None = None, budget: MemoryBudget | None = None) -> dict:
    """The measurement of a run: per-step times (slowest rank) with the first `warmup` steps set apart (all steps
    kept when a target stopped training within them), the timed wall clock, losses and memory. `legacy_s`: the
    reference harness's reading of the same steps, where there is one (our loop only); `budget`: a CPU's."""
    rows = [[log.seconds] + ([legacy_s[i]] if legacy_s else []) for i, log in enumerate(logs)]
    seconds = slowest_rank(rows, rt)
    timed = logs[warmup:] or logs
    # End-to-end wall time of the timed steps, including what happens between steps (loss read-out, logging).
    wall_s = timed[-1].started + timed[-1].seconds - timed[0].started
    steps = seconds[:, 0].tolist()
    out = {"step_s": steps[warmup:] or steps, "first_step_s": steps[0], "setup_s": setup_s, "timed_wall_s": wall_s,
           "losses": [log.loss for log in logs], "grad_norms": [log.grad_norm for log in logs],
           "skipped_steps": sum(log.skipped for log in timed), **memory_fields(rt, setup_peak, budget),
           "env": device_env(rt, cfg.model)}
    if cfg.tricks.compile:
        out["compile"] = compile_counters()
    if legacy_s:
        legacy = seconds[:, 1].tolist()
        out["legacy_step_s"] = legacy[warmup:] or legacy
    return out


def memory_so_far_gib(rt: Runtime) -> float:
    """This rank's peak so far, for the progress line: the allocator's on GPU, the process's max RSS on CPU."""
    if rt.device.type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device) / 2**30
    return _max_rss_bytes() / 2**30


def _proc_status_bytes(field: str) -> int | None:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: its peak) in bytes; None off Linux."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class MemoryBudget(Observer):
    """`hardware.memory_gib` on a CPU: once a rank's memory has grown past the budget it raises
    torch.OutOfMemoryError, which the worker records as `oom`, so the micro-batch search steps down as on a GPU.

    A CPU has no allocator cap that fails an allocation: this rehearses a GPU's memory limit. Memory in use is the
    process's peak resident set (VmHWM, so a transient peak inside backward counts) over its resident set just
    before the model is built: the interpreter, torch and the data module are outside the budget, as a GPU's context
    is. There the heap's free pages are returned and the peak is reset (/proc/self/clear_refs), so that an earlier
    cell of the same process neither counts nor hides what this one reuses; where the peak cannot be reset, the
    process's max RSS stands in. Checked after each micro-batch's backward and after the
    optimizer step."""

    def __init__(self, budget_gib: float):
        self.budget_gib = budget_gib
        with contextlib.suppress(OSError, AttributeError):  # glibc only: the C heap's free pages back to the system,
            ctypes.CDLL(None).malloc_trim(0)  # else an earlier cell's freed, still resident memory is reused unseen
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        self.baseline = _proc_status_bytes("VmRSS") or _max_rss_bytes()

    def micro_batch_end(self, i: int) -> None:
        self.check(f"micro-batch {i}'s backward")

    def optimizer_end(self, n_micro: int) -> None:
        self.check("the optimizer step")

    def growth(self) -> int:
        return (_proc_status_bytes("VmHWM") or _max_rss_bytes()) - self.baseline

    def check(self, after: str) -> None:
        grown = self.growth()
        if grown > self.budget_gib * 2**30:
            raise torch.OutOfMemoryError(f"CPU memory budget exceeded after {after}: the peak RSS grew by "
                                         f"{grown / 2**30:.3f} GiB since the model build, above "
                                         f"hardware.memory_gib={self.budget_gib:g} GiB")
