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
from pretrain_bench.train.strategies.base import TorchStrategy, dtype_name


class FSDPStrategy(TorchStrategy):
    uses_autocast = False

    def parallelize(self, model: nn.Module) -> nn.Module:
        """Shard the model while it is still on the host. fully_shard moves each module's own parameters and buffers
        to the mesh's device as it shards them (torch/distributed/fsdp/_fully_shard/_fsdp_init.py,
        `_move_states_to_device`), so a GPU holds one block's full fp32 weights at a time, never the whole model:
        moving first would put the unsharded model on every GPU and into the recorded peak memory."""
        # An explicit device mesh: gloo on CPU tensors needs a CPU mesh even on machines that have a GPU.
        mesh = init_device_mesh(self.rt.device.type, (self.rt.world,))
        self.policy = policy = (MixedPrecisionPolicy() if self.dtype == torch.float32
                                else MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32))
        reshard = self.cfg.strategy.reshard_after_forward
        for block in models.blocks(model, self.cfg.model):
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
        return fully_shard(model, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)

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
