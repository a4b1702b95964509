"""The DeepSpeed JSON config for a cell: what the `deepspeed` strategy runs with and what exports write.

Torch-free, so exporting a ready-to-use config needs no GPU stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the schema sits above this module
    from pretrain_bench.config.schema import BenchConfig


def uses_cpu_adam(cfg: BenchConfig) -> bool:
    """Whether the offloaded optimizer step is DeepSpeed's vectorised CPU Adam (what users run on GPUs). On the `cpu`
    hardware (rehearsals, tests) the optimizer runs on the CPU either way, so CPU Adam buys nothing there, while its
    first use JIT-compiles a C++ extension for about two minutes per machine: torch's AdamW steps the offloaded
    state instead, the same update."""
    return cfg.strategy.offload_optimizer and cfg.hardware.gpu != "cpu"


def deepspeed_config(cfg: BenchConfig, pin_memory: bool = True) -> dict[str, Any]:
    st, recipe = cfg.strategy, cfg.model.recipe
    zero: dict[str, Any] = {"stage": st.zero_stage, "overlap_comm": True, "contiguous_gradients": True}
    if st.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    if st.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    config: dict[str, Any] = {
        "train_batch_size": cfg.model.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": recipe.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        # On by default, and synchronized: the engine's throughput timer would synchronise the device at every
        # forward and every engine.step() (we call it after each micro-batch), stalling the host's queue and the
        # overlap of ZeRO-2's reduce-scatter with the next micro-batch. Our loop does the timing.
        "timers": {"throughput": {"enabled": False}},
    }
    if uses_cpu_adam(cfg):
        config["optimizer"] = {"type": "AdamW", "params": {
            "lr": recipe.lr, "betas": [recipe.beta1, recipe.beta2], "eps": recipe.eps,
            "weight_decay": recipe.weight_decay}}
    else:
        config["zero_allow_untested_optimizer"] = True  # our client optimizer is torch's AdamW
        if st.offload_optimizer:
            config["zero_force_ds_cpu_optimizer"] = False  # DeepSpeed would otherwise insist on its CPU Adam
    return config
