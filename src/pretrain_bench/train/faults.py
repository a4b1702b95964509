"""Fault injection for reliability tests and rehearsals: `PRETRAIN_BENCH_FAULT` in a worker's environment.

Grammar: `kind[:key=value]...`, e.g. `kill:rank=1:step=2` (SIGKILL this rank when step 2 starts), `hang:rank=1:step=2`
(this rank stops participating), `nan:step=3` (the loss becomes NaN at step 3), `oom:micro_batch_above=4` (an
out-of-memory error for micro-batches larger than 4, as a memory cap would give). Without the variable nothing is
wrapped: measured runs carry no injection code in their step.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("kill", "hang", "nan", "oom")


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int | None = None  # None: every rank
    step: int = 0
    micro_batch_above: int = 0

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, *pairs = text.split(":")
        if kind not in KINDS:
            raise ValueError(f"PRETRAIN_BENCH_FAULT kind {kind!r} not one of {', '.join(KINDS)}")
        return cls(kind, **{k: int(v) for k, v in (p.split("=", 1) for p in pairs)})


class FaultyData:
    """Wraps a batch source; the step's first call for a batch is where a fault strikes."""

    def __init__(self, data, fault: Fault, rank: int):
        self.data, self.fault, self.rank = data, fault, rank
        self.poison_now = False

    def micro_batches(self, step: int, rank: int, world: int, micro_batch: int):
        f = self.fault
        here = f.rank is None or f.rank == self.rank
        if f.kind == "oom" and micro_batch > f.micro_batch_above:
            raise torch.OutOfMemoryError(f"injected: micro-batch {micro_batch} above the cap {f.micro_batch_above}")
        if here and step == f.step and f.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if here and step == f.step and f.kind == "hang":
            while True:
                time.sleep(60)
        self.poison_now = f.kind == "nan" and step == f.step
        return self.data.micro_batches(step, rank, world, micro_batch)


def inject(model: nn.Module, data, rank: int):
    """Return `data`, wrapped if the environment asks for a fault (and make the model's loss NaN on cue)."""
    text = os.environ.get("PRETRAIN_BENCH_FAULT", "")
    if not text or text == "none":
        return data
    faulty = FaultyData(data, Fault.parse(text), rank)

    def poison(module, args, output):
        if faulty.poison_now:
            output.loss = output.loss * float("nan")
        return output

    model.register_forward_hook(poison)
    return faulty
