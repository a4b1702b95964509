"""THE training loop, shared by every mode: whole optimizer steps, timed honestly.

`data` is any `BatchSource` (`micro_batches(step, rank, world, micro_batch)`): synthetic tokens, masked tokens or
images (`synthetic.py`), or packed real text (`text_batches.py`).
One step = every gradient-accumulation micro-batch (forward + backward, gradient sync only on the last) + clipping +
optimizer + LR schedule. The clock starts after the device has finished all earlier work and stops after it has
finished this step (`torch.cuda.synchronize`), so asynchronous kernel launches cannot hide GPU time. Reading the loss
for the record happens after the clock stops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pretrain_bench.train.strategies.base import Runtime, Strategy
from pretrain_bench.train.synthetic import BatchSource, as_inputs


@dataclass(frozen=True)
class StepLog:
    step: int
    started: float  # perf_counter() when the step began (after the device was idle)
    seconds: float  # wall time of the whole optimizer step on this rank
    loss: float  # mean over the global batch
    grad_norm: float
    skipped: bool


class Observer:
    """Hooks around the loop's phases for instruments that must not change what is timed; each does nothing here."""

    def micro_batch_begin(self, i: int) -> None: ...

    def micro_batch_end(self, i: int) -> None: ...

    def optimizer_begin(self) -> None: ...

    def optimizer_end(self, n_micro: int) -> None: ...


class Observers(Observer):
    """Several observers, each called at every hook in the order given."""

    def __init__(self, *observers: Observer):
        self.observers = observers

    def micro_batch_begin(self, i: int) -> None:
        for o in self.observers:
            o.micro_batch_begin(i)

    def micro_batch_end(self, i: int) -> None:
        for o in self.observers:
            o.micro_batch_end(i)

    def optimizer_begin(self) -> None:
        for o in self.observers:
            o.optimizer_begin()

    def optimizer_end(self, n_micro: int) -> None:
        for o in self.observers:
            o.optimizer_end(n_micro)


class LegacyTiming(Observer):
    """The reference harness's step time, read from the same steps for comparison only: host clock without device
    synchronisation around the first micro-batch, times the accumulation count, plus the optimizer call."""

    def __init__(self):
        self.seconds: list[float] = []
        self._t = 0.0
        self._first_micro = 0.0

    def micro_batch_begin(self, i: int) -> None:
        if i == 0:
            self._t = time.perf_counter()

    def micro_batch_end(self, i: int) -> None:
        if i == 0:
            self._first_micro = time.perf_counter() - self._t

    def optimizer_begin(self) -> None:
        self._t = time.perf_counter()

    def optimizer_end(self, n_micro: int) -> None:
        self.seconds.append(self._first_micro * n_micro + time.perf_counter() - self._t)


class Diverged(RuntimeError):
    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(f"loss became {loss} at step {step}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def global_mean(value: torch.Tensor, rt: Runtime) -> float:
    if rt.world > 1:
        value = value.clone()
        dist.all_reduce(value)  # SUM: gloo has no AVG
        value /= rt.world
    return float(value)


def train(model: nn.Module, strategy: Strategy, data: BatchSource, rt: Runtime, micro_batch: int, n_steps: int,
          on_step: Callable[[StepLog], bool | None] | None = None, observer: Observer | None = None) -> list[StepLog]:
    """Train for n_steps optimizer steps, or until `on_step` returns True (a target reached)."""
    observer = observer or Observer()
    logs = []
    for step in range(n_steps):
        micro = data.micro_batches(step, rt.rank, rt.world, micro_batch)
        n_micro = len(micro)
        synchronize(rt.device)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=rt.device)
        for i, batch in enumerate(micro):
            is_last = i == n_micro - 1
            observer.micro_batch_begin(i)
            with strategy.micro_batch(is_last):
                with strategy.autocast():
                    loss = model(**as_inputs(batch)).loss
                strategy.backward(loss, n_micro, is_last)
            observer.micro_batch_end(i)
            loss_sum += loss.detach().float()
        observer.optimizer_begin()
        result = strategy.step()
        observer.optimizer_end(n_micro)
        synchronize(rt.device)
        seconds = time.perf_counter() - start
        log = StepLog(step, start, seconds, global_mean(loss_sum / n_micro, rt), result.grad_norm, result.skipped)
        if not math.isfinite(log.loss):
            raise Diverged(step, log.loss)
        logs.append(log)
        if on_step and on_step(log):
            break
    return logs


@torch.no_grad()
def evaluate(model: nn.Module, strategy: Strategy, batches: list[torch.Tensor], rt: Runtime) -> float:
    """Mean validation loss over this rank's batches, averaged over ranks (every rank holds the same count)."""
    model.eval()
    total = torch.zeros((), device=rt.device)
    for ids in batches:
        with strategy.autocast():
            total += model(input_ids=ids, labels=ids).loss.float()
    model.train()
    return global_mean(total / max(1, len(batches)), rt)
