"""Turn a measured record into ready-to-use training configs: HF TrainingArguments, DeepSpeed JSON, accelerate YAML.

The exports reproduce the record's cell (micro-batch, accumulation, precision, tricks, strategy) with the model's
published recipe (learning rate, AdamW settings, warm-up and cosine decay to `min_lr_ratio`, `recipe.steps` steps).
No torch here: exporting needs no GPU stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from pretrain_bench import hardware, models
from pretrain_bench.config import CONFIG_DIR, BenchConfig, from_dict, options
from pretrain_bench.strategies.zero_config import deepspeed_config

TARGETS = ("hf", "deepspeed", "accelerate")
FILENAMES = {"hf": "training_args.json", "deepspeed": "deepspeed.json", "accelerate": "accelerate.yaml"}
# DeepSpeed config keys that HF's Trainer fills from TrainingArguments when they say "auto" (so they cannot
# disagree with the exported TrainingArguments, whatever world size the user launches).
_HF_FILLED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
              "gradient_clipping")
_SCRIPT = "train.py"  # the user's training script, in launch notes


def _config(record: dict[str, Any]) -> BenchConfig:
    return from_dict(record["config"])


def warmup_steps(cfg: BenchConfig) -> int:
    """Warm-up length as the benchmark's schedule uses it (tricks.lr_lambda): at least one step."""
    recipe = cfg.model.recipe
    return max(1, round(recipe.warmup_ratio * recipe.steps))


def deepspeed_strategies() -> list[str]:
    """Strategy configs whose backend is DeepSpeed (read from configs/strategy/, so new ones are listed too)."""
    return [name for name in options("strategy")
            if OmegaConf.load(CONFIG_DIR / "strategy" / f"{name}.yaml").get("backend") == "deepspeed"]


def to_deepspeed_json(record: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed config the cell ran with, concrete values. Without CPU offload it names no optimizer: pass
    your own (torch AdamW, as the benchmark does) to `deepspeed.initialize`."""
    cfg = _config(record)
    if cfg.strategy.backend != "deepspeed":
        raise ValueError(f"strategy {record['cell']['strategy']!r} (backend {cfg.strategy.backend}) has no DeepSpeed "
                         f"config; DeepSpeed strategies: {', '.join(deepspeed_strategies())}")
    return deepspeed_config(cfg)


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


def to_hf_training_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-able kwargs for `transformers.TrainingArguments(output_dir=..., **kwargs)` that reproduce the cell."""
    return hf_training_arguments(_config(record), record["env"].get("gpu_sku") or record["config"]["hardware"]["gpu"])


def hf_training_arguments(cfg: BenchConfig, gpu_sku: str) -> dict[str, Any]:
    """TrainingArguments kwargs for a config on a GPU SKU: shared by `export --to hf` and `peers` (which runs them).

    torch_compile compiles the whole model (the benchmark compiles each block; TrainingArguments has no regional
    option). TF32 is asked for only on GPUs that have it, since TrainingArguments refuses it elsewhere."""
    recipe, tricks = cfg.model.recipe, cfg.tricks
    args: dict[str, Any] = {
        "per_device_train_batch_size": cfg.micro_batch, "gradient_accumulation_steps": cfg.grad_accum,
        "max_steps": recipe.steps, "learning_rate": recipe.lr, "adam_beta1": recipe.beta1,
        "adam_beta2": recipe.beta2, "adam_epsilon": recipe.eps, "weight_decay": recipe.weight_decay,
        "max_grad_norm": recipe.grad_clip, "warmup_steps": warmup_steps(cfg),
        "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": recipe.min_lr_ratio},
        "bf16": cfg.precision == "bf16", "fp16": cfg.precision == "fp16",
        "tf32": tricks.tf32 and hardware.gpu(gpu_sku).peak("tf32") is not None,
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


def script_settings(cfg: BenchConfig) -> list[str]:
    """The measured method's tricks that no exported config can express: the training script must apply them."""
    tr, out = cfg.tricks, []
    if tr.activation_checkpointing and tr.ac_every > 1:
        out.append(f"model: checkpoint every {tr.ac_every}th block only: model.activation_checkpointing_enable("
                   f"every_n_layers={tr.ac_every}, activation_checkpointing_kwargs={{'use_reentrant': False}})")
    if tr.fused_linear_ce:
        out.append("model: fused linear + cross-entropy head: pretrain_bench.fused_ce.apply(model) (the Trainer's "
                   "use_liger_kernel=True is a GPU equivalent, not the kernel measured)")
    if tr.attention_backend != "auto":
        out.append(f"process: only the {tr.attention_backend} SDPA kernel: "
                   f"pretrain_bench.speedups.set_sdpa_backend({tr.attention_backend!r})")
    if tr.fp8:
        out.append("model, before compile and sharding: torchao.float8.convert_to_float8_training(model, "
                   "module_filter_fn=pretrain_bench.speedups.fp8_filter)")
    if tr.tf32 and tr.compile and tr.compile_mode.startswith("max-autotune"):
        out.append("process, after building TrainingArguments: torch.set_float32_matmul_precision('high') "
                   "(transformers' tf32 writes torch's fp32_precision API, after which the getters max-autotune "
                   "reads raise; pytorch/pytorch#189955)")
    return out


def model_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for building the model (`from_config` / `from_pretrained`), not TrainingArguments."""
    return {"attn_implementation": record["config"]["tricks"]["attention"]}


def launch_command(record: dict[str, Any], to: str) -> str:
    """How to start the user's training script with the exported config (`to` as in write_export)."""
    _check_target(to)
    hw = record["config"]["hardware"]
    if to == "accelerate":
        node_flags = " --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR" if hw["nodes"] > 1 else ""
        return f"accelerate launch --config_file {FILENAMES[to]}{node_flags} {_SCRIPT}"
    if to == "deepspeed":
        nodes = f" --hostfile hostfile --num_nodes={hw['nodes']}" if hw["nodes"] > 1 else ""
        return f"deepspeed{nodes} --num_gpus={hw['gpus_per_node']} {_SCRIPT} --deepspeed_config {FILENAMES[to]}"
    if record["config"]["strategy"]["backend"] == "single":
        return f"python {_SCRIPT}"
    node_flags = (f" --nnodes={hw['nodes']} --node-rank=$NODE_RANK --rdzv-backend=c10d "
                  f"--rdzv-endpoint=$MASTER_ADDR:29500" if hw["nodes"] > 1 else "")
    return f"torchrun{node_flags} --nproc-per-node={hw['gpus_per_node']} {_SCRIPT}"


def _distributed_type(cfg: BenchConfig) -> str:
    backend = cfg.strategy.backend
    if backend in ("fsdp", "deepspeed"):
        return backend.upper()
    if backend == "ddp":
        return "MULTI_CPU" if cfg.hardware.gpu == "cpu" else "MULTI_GPU"
    return "NO"


def _accelerate_fsdp(cfg: BenchConfig) -> dict[str, Any]:
    return {"fsdp_version": 2, "fsdp_reshard_after_forward": cfg.strategy.reshard_after_forward,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": models.family(cfg.model).block_class,
            "fsdp_activation_checkpointing": cfg.tricks.activation_checkpointing}


def _accelerate_deepspeed(cfg: BenchConfig) -> dict[str, Any]:
    st = cfg.strategy
    out = {"zero_stage": st.zero_stage, "offload_optimizer_device": "cpu" if st.offload_optimizer else "none",
           "offload_param_device": "cpu" if st.offload_params else "none",
           "gradient_accumulation_steps": cfg.grad_accum, "gradient_clipping": cfg.model.recipe.grad_clip,
           "zero3_init_flag": st.zero_stage == 3}
    if cfg.hardware.nodes > 1:
        out["deepspeed_multinode_launcher"] = "standard"  # one `accelerate launch` per node, as torchrun does
    return out


def accelerate_config(record: dict[str, Any]) -> dict[str, Any]:
    """The settings `accelerate config` would write for the cell (keys as accelerate's ClusterConfig reads them)."""
    cfg = _config(record)
    out: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": _distributed_type(cfg),
        "num_machines": cfg.hardware.nodes, "num_processes": cfg.world_size, "machine_rank": 0,
        "mixed_precision": "no" if cfg.precision == "fp32" else cfg.precision,
        "use_cpu": cfg.hardware.gpu == "cpu", "gpu_ids": "all", "rdzv_backend": "static",
        "same_network": True, "main_training_function": "main", "debug": False,
    }
    if cfg.strategy.backend == "fsdp":
        out["fsdp_config"] = _accelerate_fsdp(cfg)
    if cfg.strategy.backend == "deepspeed":
        out["deepspeed_config"] = _accelerate_deepspeed(cfg)
    if cfg.tricks.compile:
        # Per-block compile, as the benchmark does it.
        out["dynamo_config"] = {"dynamo_backend": "INDUCTOR", "dynamo_use_regional_compilation": True}
    return out


def _accelerate_notes(record: dict[str, Any]) -> list[str]:
    """What accelerate's config cannot say: the model and process settings the script must apply itself."""
    cfg, c = _config(record), record["cell"]
    notes = [f"pretrain-bench export of {c['model']} on {c['hardware']} · {c['strategy']} · {c['tricks']} · "
             f"micro-batch {c['micro_batch']} × accumulation {c['grad_accum']} (record {record['key']})",
             f"launch: {launch_command(record, 'accelerate')}",
             f"model: attn_implementation={cfg.tricks.attention!r}"]
    if cfg.tricks.activation_checkpointing and cfg.strategy.backend != "fsdp":
        notes.append("model: gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})")
    if cfg.tricks.tf32:
        notes.append("process: torch.set_float32_matmul_precision('high'); torch.backends.cudnn.allow_tf32 = True")
    if cfg.tricks.fused_adamw:
        notes.append("optimizer: torch.optim.AdamW(..., fused=True)")
    return notes + script_settings(cfg)


def to_accelerate_yaml(record: dict[str, Any]) -> str:
    """An `accelerate launch --config_file` YAML, headed by comments for what the script itself must set."""
    header = "".join(f"# {line}\n" for line in _accelerate_notes(record))
    return header + yaml.safe_dump(accelerate_config(record), sort_keys=False)


def _check_target(to: str) -> None:
    if to not in TARGETS:
        raise ValueError(f"unknown export target {to!r}; allowed: {', '.join(TARGETS)}")


def _hf_export(record: dict[str, Any]) -> dict[str, Any]:
    return {"training_arguments": to_hf_training_arguments(record), "model_kwargs": model_kwargs(record),
            "script_settings": script_settings(_config(record)), "launch": launch_command(record, "hf"),
            "source": {"key": record["key"], "cell": record["cell"]}}


def write_export(record: dict[str, Any], to: str, out_dir: str | Path) -> Path:
    """Write the export for `to` (hf | deepspeed | accelerate) into out_dir and return the file's path."""
    _check_target(to)
    path = Path(out_dir) / FILENAMES[to]
    if to == "accelerate":
        text = to_accelerate_yaml(record)
    else:
        text = json.dumps(_hf_export(record) if to == "hf" else to_deepspeed_json(record), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
