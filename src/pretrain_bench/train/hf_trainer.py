"""The HF `transformers.Trainer` training one cell, timed the way our loop is timed: the peer of `pretrain-bench peers`.

It runs inside a worker rank (worker.py, mode `hf-trainer`), so it is launched, timed out and classified on failure
exactly like our cells; on several devices it is the Trainer under torchrun, i.e. DDP. What it trains comes from the
cell, never from the hub:
- the model from `models.build_model`, seeded like ours, so both start from the same weights;
- `TrainingArguments` from `spec.training_args`, the same mapping `export --to hf` writes: the recipe's
  AdamW, warm-up + cosine schedule over `recipe.steps`, clipping and precision (`bf16`/`fp16`), and the trick set's
  `tf32`, `optim="adamw_torch_fused"`, `torch_compile` (whole model, the Trainer's way); the attention kernel is the
  model's. Only what a careful user also sets is added: no saving, evaluation or reporting, a sequential sampler,
  `ddp_find_unused_parameters=False` (every parameter is used), `logging_nan_inf_filter=False` (no device wait after
  each micro-batch);
- our synthetic global batches (`data.SyntheticTokens`, generated on the device and kept on the host for the
  Trainer's data loader): the same tokens, and each optimizer step the same global batch, as our loop trains on.

Timing: in transformers 5.x `on_step_begin` fires once per optimizer step, before the first accumulation
micro-batch and after the step's batches were fetched, and `on_step_end` after clipping, the optimizer, the LR
schedule and `zero_grad` (trainer.py, `_run_epoch`). Reading the clock after a device synchronisation in both gives
one whole optimizer step, the same work our loop times; fetching batches and the Trainer's per-step loss logging
fall between steps, like our data generation and loss read-out, and are inside `timed_wall_s`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from pretrain_bench.config import BenchConfig
from pretrain_bench.spec import models
from pretrain_bench.spec.training_args import hf_training_arguments
from pretrain_bench.train import loop, tricks
from pretrain_bench.train.strategies.base import Runtime
from pretrain_bench.train.synthetic import SyntheticTokens

NAME = "hf-trainer"
TIMING_METHOD = ("whole optimizer step: TrainerCallback on_step_begin -> on_step_end, device-synchronized wall clock, "
                 "warm-up excluded")


def training_arguments(cfg: BenchConfig, out_dir: str | Path) -> dict[str, Any]:
    """TrainingArguments kwargs for the cell: the export's mapping plus nothing-saved, sequential-data settings."""
    return {**hf_training_arguments(cfg, cfg.hardware.gpu),
            # The recipe's schedule length (as ours); the callback stops after warm-up + timed steps.
            "max_steps": max(cfg.model.recipe.steps, cfg.warmup_steps + cfg.steps),
            "output_dir": str(Path(out_dir) / NAME), "report_to": "none", "save_strategy": "no",
            "eval_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "train_sampling_strategy": "sequential",
            "ddp_find_unused_parameters": False, "ddp_timeout": cfg.collective_timeout_s,
            # On by default: `isnan(loss) or isinf(loss)` after every micro-batch makes the host wait for the GPU
            # inside the step (trainer.py, `_run_epoch`); our loop never waits mid-step, so neither side should.
            "logging_nan_inf_filter": False}


def trainer_arguments(cfg: BenchConfig, kwargs: dict[str, Any]) -> TrainingArguments:
    """The TrainingArguments, then our process settings again: `tf32` makes transformers write torch's new
    `fp32_precision` API, after which the legacy getters that Inductor's autotuning reads raise; writing the legacy
    switches (tricks.apply_process_settings, as our workers do) makes both readable and equal to our side's."""
    args = TrainingArguments(**kwargs)
    tricks.apply_process_settings(cfg)
    return args


class SyntheticDataset(torch.utils.data.Dataset):
    """Our synthetic global batches for `n_steps` steps, row after row: step s is rows [s·B, (s+1)·B). With the
    sequential sampler the Trainer's step s trains on exactly those rows (split over ranks and micro-batches)."""

    def __init__(self, cfg: BenchConfig, device: torch.device, n_steps: int):
        m = cfg.model
        tokens = SyntheticTokens(m.vocab_size, m.seq_len, m.global_batch, cfg.seed, device)
        self.rows = torch.cat([tokens.global_batch_at(step).cpu() for step in range(n_steps)])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


@dataclass
class StepTimer(TrainerCallback):
    """Device-synchronised start and length of every optimizer step; stops training after `n_steps`."""

    device: torch.device
    n_steps: int
    started: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    skipped: list[bool] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    setup_peak: int | None = None  # CUDA allocator peak before the first step (then reset, as our worker does)
    report: Callable[[int, int, float, float, float], None] | None = None  # (step, of, seconds, loss, grad norm)

    def on_step_begin(self, args, state, control, **kwargs):
        loop.synchronize(self.device)
        if not self.started and self.device.type == "cuda":
            # After the Trainer has moved, wrapped and prepared everything (accelerate.prepare runs after
            # on_train_begin), so the recorded peak is training's, like worker.start_training_peak's.
            self.setup_peak = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.started.append(time.perf_counter())

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        loop.synchronize(self.device)
        self.seconds.append(time.perf_counter() - self.started[-1])
        # accelerate's optimizer wrapper knows whether fp16 loss scaling skipped the update
        self.skipped.append(bool(getattr(optimizer, "step_was_skipped", False)))
        if state.global_step >= self.n_steps:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # logging_steps=1: the mean loss of the global batch of each step
            if not math.isfinite(logs["loss"]):
                raise loop.Diverged(state.global_step - 1, logs["loss"])
            self.losses.append(float(logs["loss"]))
            self.grad_norms.append(float(logs.get("grad_norm", math.nan)))
            if self.report and self.seconds:
                self.report(len(self.losses), self.n_steps, self.seconds[-1], self.losses[-1], self.grad_norms[-1])


def train(cfg: BenchConfig, rt: Runtime, out_dir: str,
          report: Callable[[int, int, float, float, float], None] | None = None) -> tuple[StepTimer, float, dict]:
    """Train warm-up + timed steps with the Trainer; return the timer, set-up seconds and what describes the peer.
    `report` receives each step's (step, of, seconds, loss, grad norm) for the progress line."""
    import transformers

    started = time.perf_counter()
    n_steps = cfg.warmup_steps + cfg.steps
    torch.manual_seed(cfg.seed)  # the same initial weights as our loop's model
    model = models.build_model(cfg.model, attention=cfg.tricks.attention)
    if cfg.strategy.backend == "deepspeed":  # the Trainer starts DeepSpeed itself
        from pretrain_bench.train.strategies import zero

        zero.skip_cpu_shm_op()
    kwargs = training_arguments(cfg, out_dir)
    args = trainer_arguments(cfg, kwargs)
    timer = StepTimer(rt.device, n_steps, report=report)
    trainer = Trainer(model=model, args=args,
                      train_dataset=SyntheticDataset(cfg, rt.device, n_steps), callbacks=[timer])
    trainer.train()
    if len(timer.seconds) != n_steps or len(timer.losses) != n_steps:
        raise RuntimeError(f"the Trainer ran {len(timer.seconds)} steps and logged {len(timer.losses)} losses; "
                           f"expected {n_steps}")
    setup_s = timer.started[0] - started  # model, data, Trainer, and train()'s own preparation before step 1
    peer = {"name": NAME, "transformers": transformers.__version__, "training_args": kwargs,
            "model_kwargs": {"attn_implementation": cfg.tricks.attention}, "timing_method": TIMING_METHOD}
    return timer, setup_s, peer
