"""TrainingArguments for a cell: the mapping that `export --to hf` writes and the HF Trainer peer runs.

Torch-free data built from the config, so both the launching side (exports) and the ranks (the peer) share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pretrain_bench.spec import gpus, models
from pretrain_bench.spec.deepspeed_json import deepspeed_config

if TYPE_CHECKING:  # types only: the schema sits above this module
    from pretrain_bench.config.schema import BenchConfig, RecipeConfig

# DeepSpeed config keys that HF's Trainer fills from TrainingArguments when they say "auto" (so they cannot
# disagree with the exported TrainingArguments, whatever world size the user launches).
_HF_FILLED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
              "gradient_clipping")


def warmup_steps(recipe: RecipeConfig) -> int:
    """The recipe's warm-up length, at least one step: the benchmark's schedule (train/recipe.lr_lambda) and the
    exported TrainingArguments both use it, so they cannot disagree."""
    return max(1, round(recipe.warmup_ratio * recipe.steps))


def _hf_deepspeed(cfg: BenchConfig) -> dict[str, Any]:
    """The DeepSpeed config with "auto" wherever HF's Trainer fills in its TrainingArguments values."""
    ds = deepspeed_config(cfg)  # a fresh dict
    ds.update(dict.fromkeys(_HF_FILLED, "auto"))
    ds["bf16"]["enabled"] = ds["fp16"]["enabled"] = "auto"
    if "optimizer" in ds:
        ds["optimizer"]["params"] = dict.fromkeys(("lr", "betas", "eps", "weight_decay"), "auto")
    return ds


def _hf_fsdp(cfg: BenchConfig) -> dict[str, Any]:
    """FSDP2 via `fsdp=True` + `fsdp_config`: transformers 5 deprecates the "full_shard auto_wrap" strings.
    Activation checkpointing goes here, not to TrainingArguments (which would add an all-gather in backward)."""
    return {"fsdp": True, "fsdp_config": {
        "version": 2, "reshard_after_forward": cfg.strategy.reshard_after_forward,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": [models.family(cfg.model).block_class],
        "activation_checkpointing": cfg.tricks.activation_checkpointing}}


def hf_training_arguments(cfg: BenchConfig, gpu_sku: str) -> dict[str, Any]:
    """TrainingArguments kwargs for a config on a GPU SKU: shared by `export --to hf` and `peers` (which runs them).

    torch_compile compiles the whole model (the benchmark compiles each block; TrainingArguments has no regional
    option). TF32 is asked for only on GPUs that have it, since TrainingArguments refuses it elsewhere."""
    recipe, tricks = cfg.model.recipe, cfg.tricks
    args: dict[str, Any] = {
        "per_device_train_batch_size": cfg.micro_batch, "gradient_accumulation_steps": cfg.grad_accum,
        "max_steps": recipe.steps, "learning_rate": recipe.lr, "adam_beta1": recipe.beta1,
        "adam_beta2": recipe.beta2, "adam_epsilon": recipe.eps, "weight_decay": recipe.weight_decay,
        "max_grad_norm": recipe.grad_clip, "warmup_steps": warmup_steps(recipe),
        "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": recipe.min_lr_ratio},
        "bf16": cfg.precision == "bf16", "fp16": cfg.precision == "fp16",
        "tf32": tricks.tf32 and gpus.gpu(gpu_sku).peak("tf32") is not None,
        "torch_compile": tricks.compile, "optim": "adamw_torch_fused" if tricks.fused_adamw else "adamw_torch",
        "seed": cfg.seed,
    }
    if tricks.compile and tricks.compile_mode != "default":
        args["torch_compile_mode"] = tricks.compile_mode
    if cfg.hardware.gpu == "cpu":
        args["use_cpu"] = True
    if cfg.strategy.backend == "fsdp":
        return {**args, **_hf_fsdp(cfg)}
    if tricks.activation_checkpointing:
        args["activation_checkpointing"] = True  # `gradient_checkpointing` is its deprecated alias in transformers 5
        args["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    if cfg.strategy.backend == "deepspeed":
        args["deepspeed"] = _hf_deepspeed(cfg)
    return args


def flat_training_arguments(cfg: BenchConfig, gpu_sku: str, output_dir: str) -> dict[str, Any]:
    """The TrainingArguments JSON file: only TrainingArguments' own fields (output_dir first), so that
    `HfArgumentParser.parse_json_file` and the HF example scripts read it without unknown keys."""
    return {"output_dir": output_dir, **hf_training_arguments(cfg, gpu_sku)}
