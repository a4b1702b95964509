"""The small interface every backend implements, and the shared logic of the plain-PyTorch backends.

The training loop calls only: `wrap` once, then per micro-batch `autocast` + `micro_batch(is_last)` around forward
and `backward`, and per optimizer step `step`. Whatever a backend needs beyond that stays inside its file.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from pretrain_bench.config import BenchConfig
from pretrain_bench.train import recipe, tricks


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    local_rank: int
    world: int

    @property
    def dist_backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"


@dataclass(frozen=True)
class StepResult:
    grad_norm: float  # before clipping
    skipped: bool  # fp16 loss scaling found inf/nan and skipped the update


class Strategy:
    """Base class. `compiles_blocks` False means the backend compiles the model itself (DeepSpeed's engine)."""

    compiles_blocks = True

    def __init__(self, cfg: BenchConfig, rt: Runtime):
        self.cfg, self.rt = cfg, rt
        self.dtype = tricks.DTYPES[cfg.precision]

    def build_model(self) -> nn.Module:
        """The model with its tricks, built on the host; FSDP2 builds it on the meta device (train/meta_init.py)."""
        return tricks.build_model(self.cfg, compile_blocks=self.compiles_blocks)

    def wrap(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def micro_batch(self, is_last: bool) -> contextlib.AbstractContextManager:
        """Context around one micro-batch's forward and backward; gradient sync only on the last one."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, n_micro: int, is_last: bool) -> None:
        raise NotImplementedError

    def step(self) -> StepResult:
        raise NotImplementedError

    def grad_reduction(self) -> dict:
        """Read from the live objects: the dtype gradients accumulate in over micro-batches, the dtype they are
        reduced in across ranks, and when the reduction happens."""
        raise NotImplementedError


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TorchStrategy(Strategy):
    """single, DDP and FSDP2: torch AdamW, LambdaLR, clip_grad_norm_, GradScaler for fp16, autocast for mixed."""

    uses_autocast = True  # FSDP2 casts through its MixedPrecisionPolicy instead
    # DDP with gradient_as_bucket_view: `.grad` is a view into the communication buckets. Zeroing keeps it there;
    # set_to_none would let the next backward (under no_sync) allocate a fresh `.grad` beside the buckets and copy it
    # in at the sync: a second gradient copy at the peak.
    grads_to_none = True

    def wrap(self, model: nn.Module) -> nn.Module:
        self.module = self.parallelize(model)
        rc = self.cfg.model.recipe
        self.optimizer = recipe.make_optimizer(self.module, rc, fused=self.cfg.tricks.fused_adamw)
        self.scheduler = recipe.make_scheduler(self.optimizer, rc)
        self.scaler = self.make_scaler() if self.dtype == torch.float16 else None
        return self.module

    def parallelize(self, model: nn.Module) -> nn.Module:
        """Move the (CPU-built) model to the device and wrap it; FSDP2 overrides this to shard before moving."""
        return model.to(self.rt.device)

    def make_scaler(self):
        return torch.amp.GradScaler(self.rt.device.type)

    def grad_reduction(self) -> dict:
        """Parameters stay fp32 under autocast, so their gradients accumulate, and DDP all-reduces them, in fp32."""
        dtype = dtype_name(next(self.module.parameters()).dtype)
        return {"accum_dtype": dtype, "reduce_dtype": dtype if self.rt.world > 1 else None, "when": "once per step"}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.uses_autocast and self.dtype != torch.float32:
            return torch.autocast(self.rt.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, n_micro: int, is_last: bool) -> None:
        loss = loss / n_micro
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> StepResult:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.model.recipe.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip if clip > 0 else math.inf)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        skipped = False
        if self.scaler:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=self.grads_to_none)
        self.scheduler.step()
        return StepResult(grad_norm=float(norm), skipped=skipped)
