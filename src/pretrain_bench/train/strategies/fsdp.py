"""FSDP2 (`fully_shard`): each transformer block and the root sharded over all ranks.

Mixed precision goes through FSDP2's MixedPrecisionPolicy (parameters gathered and computed in bf16/fp16, gradients
reduced in fp32), as torchtitan does, rather than autocast.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from pretrain_bench.spec import models
from pretrain_bench.train import meta_init
from pretrain_bench.train.strategies.base import TorchStrategy, dtype_name


class FSDPStrategy(TorchStrategy):
    uses_autocast = False

    def build_model(self) -> nn.Module:
        """On the meta device: no rank ever holds the whole model (parallelize materialises each rank's shard)."""
        return meta_init.build_on_meta(super().build_model)

    def parallelize(self, model: nn.Module) -> nn.Module:
        """Shard the model, then give it storage. Built on the meta device (build_model), it is sharded while it has
        none; `to_empty` then allocates this rank's shards on the device and meta_init fills them with the host
        build's initial weights, one block at a time. A model built on the host (a caller's own) is sharded there:
        fully_shard moves each module's states to the device as it shards them (`_move_states_to_device`)."""
        # An explicit device mesh: gloo on CPU tensors needs a CPU mesh even on machines that have a GPU.
        mesh = init_device_mesh(self.rt.device.type, (self.rt.world,))
        self.policy = policy = (MixedPrecisionPolicy() if self.dtype == torch.float32
                                else MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32))
        reshard = self.cfg.strategy.reshard_after_forward
        blocks = models.blocks(model, self.cfg.model)
        for block in blocks:
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
        model = fully_shard(model, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
        if meta_init.is_meta(model):
            model.to_empty(device=self.rt.device)  # this rank's shards only, uninitialised
            meta_init.materialize(model, blocks)
        return model

    def grad_reduction(self) -> dict:
        """FSDP2 reduce-scatters in the policy's reduce_dtype and, without gradient sync, accumulates the unsharded
        gradients in that dtype too (FSDPParam.to_accumulated_grad_if_needed upcasts them)."""
        policy = self.policy
        dtype = dtype_name(policy.reduce_dtype or policy.param_dtype or next(self.module.parameters()).dtype)
        return {"accum_dtype": dtype, "reduce_dtype": dtype, "when": "once per step"}

    def make_scaler(self):
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(self.rt.device.type)

    def micro_batch(self, is_last: bool) -> contextlib.AbstractContextManager:
        self.module.set_requires_gradient_sync(is_last)  # reduce-scatter only after the last micro-batch
        return contextlib.nullcontext()


STRATEGY = FSDPStrategy
