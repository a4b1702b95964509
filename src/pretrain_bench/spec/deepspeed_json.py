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


def reduces_every_micro_batch(cfg: BenchConfig) -> bool:
    """Whether this DeepSpeed cell reduce-scatters gradients after every micro-batch rather than once per step.

    ZeRO-2/3 partition gradients as backward produces them (engine.py: "ZeRO stage >= 2 communicates during non
    gradient accumulation boundaries as well"). `engine.coalesce_grad_reduction()` defers that to one reduction per
    step, but inside it DeepSpeed's gradient hooks return early and autograd sums the micro-batches into the
    parameters' own `.grad`, which under bf16/fp16 is half precision: the fp32 accumulation every backend keeps would
    be lost. So it is used in fp32 only; half-precision ZeRO-2/3 reduce every micro-batch (in fp32, into an fp32
    accumulator), which is what DeepSpeed users run and costs accumulation × the traffic."""
    return (cfg.strategy.backend == "deepspeed" and cfg.strategy.zero_stage >= 2 and cfg.precision != "fp32"
            and cfg.grad_accum > 1)


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
        # Gradients accumulate and are reduced in fp32, as DDP (fp32 parameters under autocast) and FSDP2
        # (reduce_dtype=fp32) do: without these DeepSpeed falls back to the model dtype (engine.get_data_types) and
        # the communication dtype follows it, i.e. bf16 sums of every micro-batch and half the bytes on the wire.
        "data_types": {"grad_accum_dtype": "fp32"},
        "communication_data_type": "fp32",
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
