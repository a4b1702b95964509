"""What each rank runs, started by torchrun: build, wrap, train, measure, write a status file.

Ranks receive the resolved config as JSON (only the launching process composes Hydra configs). Every rank writes
`rank<N>.json` with its status; rank 0 adds the measurement. A rank that fails writes its status and exits non-zero,
so torchrun tears the others down instead of leaving them blocked in a collective.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import resource
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain_bench import config
from pretrain_bench.spec import gpus, progress
from pretrain_bench.train import faults, loop, profiling, strategies, synthetic, tricks
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


def device_env(rt: Runtime, m: config.ModelConfig) -> dict:
    kernels = {}
    if m.family == "mamba":  # transformers picks the fused kernels when they are installed (models._mamba_config)
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


def memory_fields(rt: Runtime, setup_peak: int | None) -> dict:
    """Peak bytes over all ranks. On GPU: the allocator's high-water marks of allocated bytes (what tensors need) and
    of reserved bytes (what the caching allocator held, fragmentation included: what decides an OOM), and set-up's
    own peak; on CPU the process's max RSS."""
    def most(value: float) -> int:
        peak = torch.tensor(float(value), device=rt.device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return int(peak.item())

    if rt.device.type != "cuda":
        return {"peak_mem_bytes": most(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
                "mem_kind": "cpu_max_rss"}
    out = {"peak_mem_bytes": most(torch.cuda.max_memory_allocated(rt.device)), "mem_kind": "cuda_max_allocated",
           "peak_reserved_bytes": most(torch.cuda.max_memory_reserved(rt.device))}
    if setup_peak is not None:
        out["setup_peak_mem_bytes"] = most(setup_peak)
    return out


def memory_so_far_gib(rt: Runtime) -> float:
    """This rank's peak so far, for the progress line: the allocator's on GPU, the process's max RSS on CPU."""
    if rt.device.type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def print_progress(cfg: config.BenchConfig, rt: Runtime, step: int, total: int, seconds: float, loss: float,
                   grad_norm: float) -> None:
    """Rank 0's line after each optimizer step (spec.progress), which the launching process shows live."""
    if rt.rank == 0:
        m = cfg.model
        print(progress.step_line(step, total, seconds, loss, grad_norm, m.global_batch, m.tokens_per_sample, m.unit,
                                 memory_so_far_gib(rt)), flush=True)


def slowest_rank(rows: list[list[float]], rt: Runtime) -> torch.Tensor:
    """Per-step times, maximum over ranks: a step ends when the slowest rank ends it."""
    seconds = torch.tensor(rows, dtype=torch.float64, device=rt.device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    return seconds


def batch_source(cfg: config.BenchConfig, rt: Runtime, corpus_path: str | None):
    if corpus_path is None:
        return synthetic.synthetic(cfg.model, cfg.seed, rt.device)
    from pretrain_bench.data.corpus import PackedCorpus
    from pretrain_bench.train.text_batches import PackedBatches

    return PackedBatches(PackedCorpus.open(corpus_path), cfg.model.global_batch, cfg.seed, rt.device)


class TargetTracker:
    """Evaluates every `eval_every` steps inside the clock and stops training at the first evaluation ≤ target."""

    def __init__(self, cfg: config.BenchConfig, model, strategy, rt: Runtime, corpus_path: str):
        from pretrain_bench.data.corpus import PackedCorpus
        from pretrain_bench.train.text_batches import val_batches

        self.cfg, self.model, self.strategy, self.rt = cfg, model, strategy, rt
        corpus = PackedCorpus.open(corpus_path)
        n = min(cfg.target.eval_sequences, corpus.n_val) // rt.world * rt.world  # equal share on every rank
        if n == 0:
            raise ValueError(f"the validation split has {corpus.n_val} sequences, fewer than the "
                             f"{rt.world} ranks; raise data.val_tokens")
        self.batches = list(val_batches(corpus, cfg.micro_batch, rt.device, max_sequences=n, rank=rt.rank,
                                        world=rt.world))
        self.n_sequences = n
        self.evals: list[dict] = []
        self.clock_start: float | None = None

    def __call__(self, log: loop.StepLog) -> bool:
        if self.clock_start is None:
            self.clock_start = log.started  # the clock starts with the first training step
        t = self.cfg.target
        if (log.step + 1) % t.eval_every and log.step + 1 < t.max_steps:
            return False
        loss = loop.evaluate(self.model, self.strategy, self.batches, self.rt)
        self.evals.append({"step": log.step + 1, "val_loss": loss,
                           "elapsed_s": time.perf_counter() - self.clock_start})
        if self.rt.rank == 0:
            print(f"eval after step {log.step + 1}: validation loss {loss:.4f} (target {t.loss})", flush=True)
        return loss <= t.loss

    def result(self) -> dict:
        reached = bool(self.evals) and self.evals[-1]["val_loss"] <= self.cfg.target.loss
        return {"loss": self.cfg.target.loss, "reached": reached, "evals": self.evals,
                "steps": self.evals[-1]["step"] if reached else None,
                "time_s": self.evals[-1]["elapsed_s"] if reached else None,
                "final_val_loss": self.evals[-1]["val_loss"] if self.evals else None,
                "eval_every": self.cfg.target.eval_every, "max_steps": self.cfg.target.max_steps,
                "eval_sequences": self.n_sequences}


def measure_cell(cfg: config.BenchConfig, rt: Runtime, mode: str, corpus_path: str | None, out_dir: str) -> dict:
    started = time.perf_counter()
    tricks.apply_process_settings(cfg)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank and for every strategy
    strategy = strategies.create(cfg, rt)
    model = strategy.wrap(strategy.build_model())
    batches = faults.inject(model, batch_source(cfg, rt, corpus_path), rt.rank)
    tracker = TargetTracker(cfg, model, strategy, rt, corpus_path) if mode == "target" else None
    setup_s = time.perf_counter() - started
    setup_peak = start_training_peak(rt)
    total = cfg.target.max_steps if tracker else cfg.warmup_steps + cfg.steps
    warmup = 1 if tracker else cfg.warmup_steps  # in target mode every step trains; only the first is set apart

    def on_step(log: loop.StepLog) -> bool:
        print_progress(cfg, rt, log.step + 1, total, log.seconds, log.loss, log.grad_norm)
        return bool(tracker and tracker(log))

    profiler = profiling.start(cfg, rt, out_dir) if mode == "profile" else None

    def step_hook(log: loop.StepLog) -> bool:
        stop = on_step(log)
        if profiler:
            profiler.step()
        return stop

    logs = loop.train(model, strategy, batches, rt, cfg.micro_batch, total, on_step=step_hook)
    seconds = slowest_rank([[log.seconds, log.legacy_seconds] for log in logs], rt)
    seconds, legacy = seconds[:, 0], seconds[:, 1]
    memory = memory_fields(rt, setup_peak)
    timed = logs[warmup:] or logs
    # End-to-end wall time of the timed steps, including what happens between steps (loss read-out, logging).
    wall_s = timed[-1].started + timed[-1].seconds - timed[0].started
    measurement = {"step_s": seconds.tolist()[warmup:] or seconds.tolist(),
                   "legacy_step_s": legacy.tolist()[warmup:] or legacy.tolist(),
                   "first_step_s": float(seconds[0]), "setup_s": setup_s, "timed_wall_s": wall_s,
                   "losses": [log.loss for log in logs], "grad_norms": [log.grad_norm for log in logs],
                   "skipped_steps": sum(log.skipped for log in timed), **memory, "env": device_env(rt, cfg.model)}
    if tracker:
        measurement["target"] = tracker.result()
    if profiler:
        profiler.stop()
        measurement["profile"] = profiling.breakdown(profiler, rt, wall_s)
    return measurement


def measure_hf_trainer(cfg: config.BenchConfig, rt: Runtime, out_dir: str) -> dict:
    """The HF Trainer on the cell (hf_trainer.py), as a measurement of the same shape as `measure_cell`'s."""
    from pretrain_bench.train import hf_trainer

    timer, setup_s, peer = hf_trainer.train(cfg, rt, out_dir, report=lambda *step: print_progress(cfg, rt, *step))
    seconds = slowest_rank([[s] for s in timer.seconds], rt)[:, 0].tolist()
    memory = memory_fields(rt, timer.setup_peak)
    w = cfg.warmup_steps
    measurement = {"step_s": seconds[w:], "first_step_s": seconds[0], "setup_s": setup_s,
                   "timed_wall_s": timer.started[-1] + timer.seconds[-1] - timer.started[w],
                   "losses": timer.losses, "grad_norms": timer.grad_norms, "skipped_steps": sum(timer.skipped[w:]),
                   **memory, "env": device_env(rt, cfg.model), "peer": peer}
    return measurement


def classify(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    if isinstance(exc, loop.Diverged):
        return "diverged"
    if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
        return "timeout"  # a collective waited past collective_timeout_s: a peer hangs
    return "error"


def main(spec_path: str, out_dir: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    cfg = config.from_dict(spec["config"])
    rank = int(os.environ.get("RANK", 0))
    status: dict = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid()}
    code = 0
    try:
        rt = runtime(cfg)
        if spec["mode"] == "hf-trainer":  # a peer framework on the same cell (`pretrain-bench peers`)
            measurement = measure_hf_trainer(cfg, rt, out_dir)
        else:
            measurement = measure_cell(cfg, rt, spec["mode"], spec["corpus"], out_dir)
        status.update(status="ok", measurement=measurement if rank == 0 else None)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this rank's recorded status
        status.update(status=classify(exc), error=f"rank {rank}: {type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=20))
        if isinstance(exc, loop.Diverged):
            status["step"] = exc.step
        code = 1
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(status))
    if code == 0:
        dist.barrier()  # every rank's status file is written before any rank starts to exit
    sys.stdout.flush()
    # Leave without running C++ destructors: gloo's teardown sometimes aborts the process ("terminate called without
    # an active exception") after all work is done, and torchrun would then report a finished cell as failed.
    os._exit(code)


if __name__ == "__main__":
    main(*sys.argv[1:3])
