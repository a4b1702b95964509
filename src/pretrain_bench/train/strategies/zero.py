"""DeepSpeed ZeRO stages 1-3, with optional CPU offload of optimizer state and parameters.

DeepSpeed owns accumulation (it scales the loss by 1/accumulation and steps only at the boundary), clipping, loss
scaling and mixed precision (its bf16/fp16 modes), so this class mostly forwards to the engine.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pretrain_bench.spec import models
from pretrain_bench.spec.deepspeed_json import deepspeed_config, reduces_every_micro_batch, uses_cpu_adam
from pretrain_bench.train import meta_init, recipe, speedups
from pretrain_bench.train.strategies.base import StepResult, Strategy, dtype_name

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def skip_cpu_shm_op() -> None:
    """Keep DeepSpeed from building its shared-memory all-reduce op, for our strategy and for the HF Trainer's
    DeepSpeed alike (call before DeepSpeed's comm backend starts).

    DeepSpeed JIT-builds that op (ninja, with a cpuinfo probe) whenever its comm backend starts on a CPU: ~50 s per
    rank the first time in a new environment, 3-8 s per process after. Only its inference all-reduce (module_inject's
    tensor parallelism) uses it; training's collectives go straight to torch.distributed (deepspeed/comm/torch.py).
    On a GPU DeepSpeed has no such builder, and this changes nothing."""
    import importlib

    # by module name: `import deepspeed.comm.torch as m` would bind the `torch` that deepspeed.comm imported
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def init_distributed(backend: str) -> None:
    """deepspeed.init_distributed (it adopts the process group already up), without the CPU shared-memory op."""
    import deepspeed

    skip_cpu_shm_op()
    deepspeed.init_distributed(dist_backend=backend)


class DeepSpeedStrategy(Strategy):
    compiles_blocks = False  # the engine compiles the model itself (engine.compile), which ZeRO-3 hooks need

    def build_model(self) -> nn.Module:
        """ZeRO-3: built inside deepspeed.zero.Init, partitioned module by module as it is constructed (no rank holds
        the whole model, and no GPU receives it whole before partitioning), with the host build's initial weights."""
        if self.cfg.strategy.zero_stage != 3:
            return super().build_model()
        import deepspeed

        init_distributed(self.rt.dist_backend)
        config = deepspeed_config(self.cfg, pin_memory=self.rt.device.type == "cuda")
        return meta_init.build_partitioned(super().build_model, lambda: deepspeed.zero.Init(config_dict_or_path=config),
                                           lambda model: models.blocks(model, self.cfg.model))

    def wrap(self, model: nn.Module) -> nn.Module:
        import deepspeed

        init_distributed(self.rt.dist_backend)
        rc = self.cfg.model.recipe
        config = deepspeed_config(self.cfg, pin_memory=self.rt.device.type == "cuda")
        cpu_adam = uses_cpu_adam(self.cfg)  # else our torch AdamW, also for offloaded state on the `cpu` hardware
        optimizer = None if cpu_adam else recipe.make_optimizer(model, rc, fused=self.cfg.tricks.fused_adamw)
        params = recipe.param_groups(model, rc.weight_decay) if cpu_adam else None
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, model_parameters=params, config=config,
            lr_scheduler=lambda opt: recipe.make_scheduler(opt, rc))
        if self.cfg.precision in HALF:
            model.register_forward_pre_hook(self._inputs_in_weight_dtype, with_kwargs=True)
        if self.cfg.tricks.compile:
            self.engine.compile(compile_kwargs=speedups.compile_kwargs(self.cfg.tricks))
        self._skipped = self.engine.skipped_steps
        # ZeRO-2/3 reduce after every backward; coalescing defers that to once per step where the math allows it
        # (reduces_every_micro_batch says when it does not). ZeRO-1 reduces at the boundary anyway.
        self.coalesce = (self.cfg.strategy.zero_stage >= 2 and self.cfg.grad_accum > 1
                         and not reduces_every_micro_batch(self.cfg))
        self._coalescing: contextlib.ExitStack | None = None
        return self.engine

    def grad_reduction(self) -> dict:
        _, accum = self.engine.get_data_types()
        every = self.cfg.strategy.zero_stage >= 2 and not self.coalesce and self.cfg.grad_accum > 1
        return {"accum_dtype": dtype_name(accum), "reduce_dtype": dtype_name(self.engine.communication_data_type),
                "when": "every micro-batch" if every else "once per step"}

    @contextlib.contextmanager
    def micro_batch(self, is_last: bool):
        """With coalescing, every backward of the step runs inside one `coalesce_grad_reduction` block, whose exit
        after the last one reduces the step's gradients once."""
        if self.coalesce and self._coalescing is None:
            self.engine.set_gradient_accumulation_boundary(False)
            self._coalescing = contextlib.ExitStack()
            self._coalescing.enter_context(self.engine.coalesce_grad_reduction())
        yield
        if is_last and self._coalescing is not None:
            self._coalescing.close()
            self._coalescing = None

    def _inputs_in_weight_dtype(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """DeepSpeed's bf16/fp16 modes hold the weights themselves in half precision (no autocast), and cast inputs
        only for fp16 with `auto_cast`; a model that does not cast its float inputs (HF ConvNeXt's pixel_values)
        would then fail on fp32 images. Cast float inputs as the HF Trainer does under DeepSpeed (`_prepare_input`)."""
        dtype = HALF[self.cfg.precision]
        return args, {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}

    def backward(self, loss, n_micro: int, is_last: bool) -> None:
        self.engine.backward(loss)
        if not is_last and not self.coalesce:
            self.engine.step()  # not at the accumulation boundary: DeepSpeed only advances its micro-step count

    def step(self) -> StepResult:
        if self.coalesce:
            self.engine.set_gradient_accumulation_boundary(True)  # one step() call per optimizer step
        self.engine.step()
        skipped = self.engine.skipped_steps > self._skipped
        self._skipped = self.engine.skipped_steps
        norm = self.engine.get_global_grad_norm()
        return StepResult(grad_norm=float(norm) if norm is not None else float("nan"), skipped=skipped)


STRATEGY = DeepSpeedStrategy
