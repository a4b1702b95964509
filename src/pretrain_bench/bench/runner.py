"""Measure a cell into the store, or return the store's answer when it already has one (resume).

A cell's identity is its key (config + library, CUDA, cuDNN, NCCL and driver versions + GPU SKU + the worker
environment variables that change speed or what fits) and the kind of measurement. A stored `ok` is final; a stored
`oom` is final for a micro-batch probe (it will not fit next time either); a stored `timeout` is final while the
limit stays the same (it would time out again); anything else (error, diverged, an `oom` of a full run, a timeout
under a smaller limit) is measured again. `force` re-measures everything.

Unless `timeout_s` is given, a cell's limit fits its work: the expected step time (the cell's measured probe, else a
FLOPs estimate) times its steps, with a margin, plus a start-up and compile allowance.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pretrain_bench.analysis import record
from pretrain_bench.bench import launch, probe, tracking
from pretrain_bench.bench.progress import Watcher
from pretrain_bench.bench.store import Store
from pretrain_bench.config import BenchConfig
from pretrain_bench.spec import gpus, models

# Worker environment variables that change speed or memory (PYTORCH_CUDA_ALLOC_CONF changes what fits; NCCL_*, OMP_*,
# Inductor and DeepSpeed switches change speed) and the fault injection of tests; CUDA_VISIBLE_DEVICES and the like
# only say which devices a job got, so a resumed sweep on other devices of the same kind still finds its records.
KEY_ENV_PREFIXES = ("PYTORCH_", "TORCH_", "TORCHINDUCTOR_", "NCCL_", "CUBLAS_", "CUDNN_", "OMP_", "MKL_", "DS_",
                    "PRETRAIN_BENCH_FAULT")


def key_env(cfg: BenchConfig) -> dict[str, str]:
    """The speed-relevant part of the environment the workers get: inherited, computed and `+env.*` overrides."""
    return {k: v for k, v in sorted(launch.worker_env(cfg).items()) if k.startswith(KEY_ENV_PREFIXES)}


# Time-outs that fit the work (when timeout_s is not given):
# Process start (DeepSpeed's import alone: ~20 s, more on a loaded machine), model build and sharding, first step.
START_ALLOWANCE_S = 300.0
COMPILE_ALLOWANCE_S = 600.0  # torch.compile / Inductor autotuning on the first steps
STEP_MARGIN = 3.0  # a probe runs another accumulation, an estimate assumes an MFU: leave room
ASSUMED_MFU = 0.35
CPU_FLOPS = 2e10  # per process, for the estimate only


def is_final(r: record.Record, timeout_s: float | None = None) -> bool:
    """A record that measuring again would only repeat: ok, a probe that ran out of memory (it will not fit next time
    either), or a timeout at a limit no larger than the one it had."""
    if r["status"] == "timeout":
        had = r["config"].get("timeout_s")
        return timeout_s is not None and had is not None and timeout_s <= had
    return r.ok or (r["kind"] == record.Kind.PROBE and r["status"] == "oom")


def estimated_step_s(cfg: BenchConfig) -> float | None:
    """One optimizer step from FLOPs at an assumed MFU (a GPU's dense peak, or a nominal CPU rate); None when the
    catalogue has no peak for the recipe's precision."""
    work = cfg.model.global_batch * cfg.model.seq_len * models.flops_per_token(cfg.model)
    if cfg.hardware.gpu == "cpu":
        return work / (CPU_FLOPS * cfg.world_size)
    peak = gpus.gpu(cfg.hardware.gpu).peak(gpus.peak_dtype(cfg.model.recipe.precision, tf32=True))
    return work / (peak * cfg.world_size * ASSUMED_MFU) if peak else None


@dataclass
class Runner:
    store: Store
    force: bool = False
    group: str | None = None  # experiment-tracker group (a sweep cell)
    watcher: Watcher = field(default_factory=Watcher)  # hears each cell's log while it runs (live progress)
    versions: dict = field(default_factory=record.library_versions)
    say: Callable[[str], None] = print
    _skus: dict = field(default_factory=dict)
    _device_versions: dict = field(default_factory=dict)

    def gpu_sku(self, cfg: BenchConfig) -> str:
        """The machine's GPU, checked against the config once per hardware layout (before any worker starts)."""
        name = cfg.hardware.name
        if name not in self._skus:
            self._skus[name] = probe.detect_gpu(cfg)
        return self._skus[name]

    def all_versions(self, cfg: BenchConfig) -> dict:
        """Library versions, and on GPUs those of CUDA, cuDNN, NCCL and the driver (read once per layout)."""
        name = cfg.hardware.name
        if name not in self._device_versions:
            self._device_versions[name] = probe.device_versions(cfg)
        return {**self.versions, **self._device_versions[name]}

    def key(self, cfg: BenchConfig) -> str:
        return record.cell_key(cfg, self.all_versions(cfg), self.gpu_sku(cfg), key_env(cfg))

    def with_corpus(self, cfg: BenchConfig) -> tuple[BenchConfig, Path | None]:
        """For real text: tokenize and pack once, here (workers only memory-map), and size the model's vocabulary
        to the tokenizer's (rounded up to a multiple of 64), so that FLOPs and records describe the model trained."""
        if cfg.data.source == "synthetic":
            return cfg, None
        from pretrain_bench.data import corpus

        # The split and tokenizer are fixed (seed 0) so that every seed and method is judged on the same validation
        # set; cfg.seed still sets initial weights and batch order.
        path = corpus.prepare(cfg.data, cfg.model.seq_len, seed=0, progress=self.watcher.corpus)
        vocab = -(-corpus.PackedCorpus.open(path).vocab_size // 64) * 64
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab)), path

    def with_timeout(self, cfg: BenchConfig, kind: str) -> tuple[BenchConfig, str]:
        """The cell with its time-out: as given, or from the expected step time (see the module's docstring)."""
        if cfg.timeout_s is not None:
            return cfg, "as given"
        from pretrain_bench.bench.search import probe_config  # search builds on this module

        probe_cfg = probe_config(cfg)
        probe = self.store.latest().get((self.key(probe_cfg), "probe")) if kind != "probe" else None
        if probe and probe["status"] == "ok":
            step_s = probe["timing"]["honest_stats"]["median"] * cfg.grad_accum / probe_cfg.grad_accum
            source = "measured probe"
        elif (step_s := estimated_step_s(cfg)) is not None:
            source = "estimate"
        else:
            return dataclasses.replace(cfg, timeout_s=launch.UNSIZED_TIMEOUT_S), "no step-time estimate: the default"
        steps = cfg.warmup_steps + (cfg.target.max_steps if kind == "target" else cfg.steps)
        allowance = START_ALLOWANCE_S + (COMPILE_ALLOWANCE_S if cfg.tricks.compile else 0.0)
        limit = int(math.ceil((allowance + STEP_MARGIN * steps * step_s) / 10) * 10)
        why = (f"{allowance:.0f} s start-up{' and compile' if cfg.tricks.compile else ''} + {STEP_MARGIN:.0f} × "
               f"{steps} steps × {step_s:.3g} s ({source})")
        return dataclasses.replace(cfg, timeout_s=limit), why

    def cached(self, cfg: BenchConfig, kind: str = "throughput") -> dict | None:
        return self._final_record(self.with_timeout(self.with_corpus(cfg)[0], kind)[0], kind)

    def _final_record(self, resolved: BenchConfig, kind: str) -> dict | None:
        prior = self.store.latest().get((self.key(resolved), kind))
        return prior if prior and is_final(prior, resolved.timeout_s) and not self.force else None

    def history(self, cfg: BenchConfig, kind: str = "throughput") -> list[dict]:
        """Every ok record of this cell in the store, oldest first: its repeated fresh runs."""
        key = self.key(self.with_corpus(cfg)[0])
        return [r for r in self.store.records() if r["key"] == key and r["kind"] == kind and r["status"] == "ok"]

    def measure(self, cfg: BenchConfig, kind: str = "throughput", fresh: bool = False) -> dict:
        """The store's final record of this cell, or a new measurement (always a new one when `fresh`)."""
        cfg, corpus_path = self.with_corpus(cfg)
        cfg, why = self.with_timeout(cfg, kind)
        if not fresh and (prior := self._final_record(cfg, kind)):
            return prior
        self.say(f"{kind} {cfg.model.name} on {cfg.hardware.name}, micro-batch {cfg.micro_batch}: time-out "
                 f"{cfg.timeout_s} s ({why})")
        key = self.key(cfg)
        run_dir = self.store.run_dir(f"{key}-{kind}")
        c = record.cell(cfg)
        total = cfg.target.max_steps if kind == "target" else cfg.warmup_steps + cfg.steps
        self.watcher.started(f"{c['model']} · {c['strategy']} · {c['tricks']} · mb {c['micro_batch']}",
                             run_dir / "log.txt", total)
        outcome = launch.run_cell(cfg, run_dir, mode=record.Kind(kind).worker_mode, corpus=corpus_path,
                                  watcher=self.watcher)
        measured_env = (outcome.measurement or {}).get("env", {})
        env = {**self.all_versions(cfg), "gpu_sku": self.gpu_sku(cfg), "hostname": socket.gethostname(),
               "worker_env": key_env(cfg), **measured_env}
        result = record.make_record(cfg, key, outcome.status, outcome.error, outcome.measurement, env, kind=kind,
                                    failed_step=outcome.failed_step)
        self.store.append(result)
        self.watcher.finished(result, run_dir / "log.txt")
        if cfg.logger == "wandb":
            tracking.log_record(result, group=self.group)
        return result
