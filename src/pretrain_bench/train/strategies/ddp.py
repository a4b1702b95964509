"""torch DistributedDataParallel: replicas, one gradient all-reduce per optimizer step."""

from __future__ import annotations

import contextlib

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pretrain_bench.train.strategies.base import TorchStrategy


class DDPStrategy(TorchStrategy):
    grads_to_none = False  # keep `.grad` in the buckets (see TorchStrategy.grads_to_none)

    def parallelize(self, model: nn.Module) -> nn.Module:
        device_ids = [self.rt.local_rank] if self.rt.device.type == "cuda" else None
        # gradient_as_bucket_view: gradients live in the communication buckets (less memory, same math).
        return DistributedDataParallel(super().parallelize(model), device_ids=device_ids,
                                       gradient_as_bucket_view=True)

    def micro_batch(self, is_last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if is_last else self.module.no_sync()


STRATEGY = DDPStrategy
