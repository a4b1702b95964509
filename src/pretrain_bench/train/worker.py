"""What each rank runs, started by torchrun: build, wrap, train, measure, write a status file.

Ranks receive the resolved config as JSON (only the launching process composes Hydra configs). Every rank writes
`rank<N>.json` with its status; rank 0 adds the measurement. A rank that fails writes its status and exits non-zero,
so torchrun tears the others down instead of leaving them blocked in a collective.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain_bench import config
from pretrain_bench.spec import progress
from pretrain_bench.train import faults, loop, measurement, profiling, strategies, synthetic, target, tricks
from pretrain_bench.train.strategies.base import Runtime


def runtime(cfg: config.BenchConfig) -> Runtime:
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.hardware.gpu == "cpu":
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    rt = Runtime(device=device, rank=rank, local_rank=local_rank, world=world)
    if world != cfg.world_size:
        raise RuntimeError(f"launched with WORLD_SIZE={world}, but the config needs {cfg.world_size}")
    dist.init_process_group(backend=rt.dist_backend, device_id=device if device.type == "cuda" else None,
                            timeout=datetime.timedelta(seconds=cfg.collective_timeout_s))
    return rt


def batch_source(cfg: config.BenchConfig, rt: Runtime, corpus_path: str | None):
    if corpus_path is None:
        return synthetic.synthetic(cfg.model, cfg.seed, rt.device)
    from pretrain_bench.data.corpus import PackedCorpus
    from pretrain_bench.train.text_batches import PackedBatches

    return PackedBatches(PackedCorpus.open(corpus_path), cfg.model.global_batch, cfg.seed, rt.device)


def print_progress(cfg: config.BenchConfig, rt: Runtime, step: int, total: int, seconds: float, loss: float,
                   grad_norm: float) -> None:
    """Rank 0's line after each optimizer step (spec.progress), which the launching process shows live."""
    if rt.rank == 0:
        m = cfg.model
        print(progress.step_line(step, total, seconds, loss, grad_norm, m.global_batch, m.tokens_per_sample, m.unit,
                                 measurement.memory_so_far_gib(rt)), flush=True)


def measure_cell(cfg: config.BenchConfig, rt: Runtime, mode: str, corpus_path: str | None, out_dir: str) -> dict:
    started = time.perf_counter()
    tricks.apply_process_settings(cfg)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank and for every strategy
    # a CPU budget counts what the model, its wrapping and training add to the process (measurement.MemoryBudget)
    budget = measurement.MemoryBudget(cfg.hardware.memory_gib) if cfg.hardware.memory_gib is not None else None
    strategy = strategies.create(cfg, rt)
    model = strategy.wrap(strategy.build_model())
    batches = faults.inject(model, batch_source(cfg, rt, corpus_path), rt.rank)
    tracker = target.TargetTracker(cfg, model, strategy, rt, corpus_path) if mode == "target" else None
    setup_s = time.perf_counter() - started
    setup_peak = measurement.start_training_peak(rt)
    total = cfg.target.max_steps if tracker else cfg.warmup_steps + cfg.steps
    warmup = 1 if tracker else cfg.warmup_steps  # in target mode every step trains; only the first is set apart
    profiler = profiling.start(cfg, rt, out_dir) if mode == "profile" else None

    def on_step(log: loop.StepLog) -> bool:
        """Log the step, advance the profiler's schedule, and stop when the target is reached."""
        print_progress(cfg, rt, log.step + 1, total, log.seconds, log.loss, log.grad_norm)
        if profiler:
            profiler.step()
        return bool(tracker and tracker(log))

    legacy = loop.LegacyTiming()
    observer = loop.Observers(legacy, budget) if budget else legacy
    logs = loop.train(model, strategy, batches, rt, cfg.micro_batch, total, on_step=on_step, observer=observer)
    result = measurement.build(cfg, rt, logs, warmup, setup_s, setup_peak, legacy_s=legacy.seconds, budget=budget)
    result["grad_reduction"] = strategy.grad_reduction()
    if tracker:
        result["target"] = tracker.result()
    if profiler:
        profiler.stop()
        result["profile"] = profiling.breakdown(profiler, rt, result["timed_wall_s"])
    return result


def measure_hf_trainer(cfg: config.BenchConfig, rt: Runtime, out_dir: str) -> dict:
    """The HF Trainer on the cell (hf_trainer.py), as a measurement of the same shape as `measure_cell`'s."""
    from pretrain_bench.train import hf_trainer

    timer, setup_s, peer = hf_trainer.train(cfg, rt, out_dir, report=lambda *step: print_progress(cfg, rt, *step))
    logs = [loop.StepLog(i, *row) for i, row in enumerate(zip(timer.started, timer.seconds, timer.losses,
                                                              timer.grad_norms, timer.skipped, strict=True))]
    return {**measurement.build(cfg, rt, logs, cfg.warmup_steps, setup_s, timer.setup_peak), "peer": peer}


# Allocation failures that are not torch.OutOfMemoryError: cuBLAS and cuDNN handles and workspaces, and NCCL's
# buffers (`ncclUnhandledCudaError: Failed to CUDA calloc …`, host buffers via cudaHostAlloc). Lower case.
OOM_MARKERS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "failed to cuda calloc",
               "failed to cuda host alloc", "failed to cuda malloc")


def _chain(exc: BaseException | None):
    """The exception and what it was raised from or during: a DistBackendError often wraps the allocation failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def classify(exc: BaseException) -> str:
    """A failure's status: `oom` makes the micro-batch search step down, `error` abandons the method."""
    for e in _chain(exc):
        if isinstance(e, torch.OutOfMemoryError) or any(m in str(e).lower() for m in OOM_MARKERS):
            return "oom"
    if isinstance(exc, loop.Diverged):
        return "diverged"
    if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
        return "timeout"  # a collective waited past collective_timeout_s: a peer hangs
    return "error"


def run_one(cfg: config.BenchConfig, rt: Runtime | None, spec: dict, out_dir: Path) -> tuple[dict, Runtime | None]:
    """Measure one cell on this rank: (its status, the runtime for the next cell). Never raises."""
    rank = int(os.environ.get("RANK", 0))
    status: dict = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        rt = rt or runtime(cfg)
        if spec["mode"] == "hf-trainer":  # a peer framework on the same cell (`pretrain-bench peers`)
            result = measure_hf_trainer(cfg, rt, str(out_dir))
        else:
            result = measure_cell(cfg, rt, spec["mode"], spec["corpus"], str(out_dir))
        status.update(status="ok", measurement=result if rank == 0 else None)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this rank's recorded status
        status.update(status=classify(exc), error=f"rank {rank}: {type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=20))
        if isinstance(exc, loop.Diverged):
            status["step"] = exc.step
    return status, rt


def main(spec_path: str, out_dir: str) -> None:
    """Run the launch's cells in turn (usually one), each writing one status file per rank."""
    spec = json.loads(Path(spec_path).read_text())
    cfgs = [config.from_dict(c) for c in spec["configs"]]
    rt, code = None, 0
    for i, cfg in enumerate(cfgs):
        cell_dir = Path(out_dir) if len(cfgs) == 1 else Path(out_dir, f"cell{i}")
        cell_dir.mkdir(exist_ok=True)
        status, rt = run_one(cfg, rt, spec, cell_dir)
        Path(cell_dir, f"rank{status['rank']}.json").write_text(json.dumps(status))
        if status["status"] != "ok":
            code = 1
            break
        dist.barrier()  # every rank's status file is written before any rank starts the next cell or exits
        gc.collect()
    sys.stdout.flush()
    # Leave without running C++ destructors: gloo's teardown sometimes aborts the process ("terminate called without
    # an active exception") after all work is done, and torchrun would then report a finished cell as failed.
    os._exit(code)

if __name__ == "__main__":
    main(*sys.argv[1:3])
