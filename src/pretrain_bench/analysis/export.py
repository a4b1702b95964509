"""Turn a measured record into ready-to-use training configs: HF TrainingArguments, DeepSpeed JSON, accelerate YAML.

The exports reproduce the record's cell (micro-batch, accumulation, precision, tricks, strategy) with the model's
published recipe (learning rate, AdamW settings, warm-up and cosine decay to `min_lr_ratio`, `recipe.steps` steps).
Each export is one file the consuming library reads as it is (a flat TrainingArguments JSON for
`HfArgumentParser.parse_json_file` and the HF example scripts), named after the model, hardware and method, plus a
notes file with what no config can say (model keyword arguments, tricks the script applies, the launch command).
No torch here: exporting needs no GPU stack.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from pretrain_bench.config import CONFIG_DIR, BenchConfig, from_dict, options
from pretrain_bench.spec import models
from pretrain_bench.spec.deepspeed_json import deepspeed_config
from pretrain_bench.spec.training_args import flat_training_arguments, hf_training_arguments

TARGETS = ("hf", "deepspeed", "accelerate")
SUFFIXES = {"hf": "training_args.json", "deepspeed": "deepspeed.json", "accelerate": "accelerate.yaml"}
_SCRIPT = "train.py"  # the user's training script, in launch notes


def stem(record: dict[str, Any]) -> str:
    """`<model>_<hardware>_<strategy>_<tricks>_mb<micro-batch>_<key prefix>`: a name that says what was measured, so
    that exports of different records sit side by side."""
    c = record["cell"]
    parts = (c["model"], c["hardware"], c["strategy"], c["tricks"], f"mb{c['micro_batch']}", record["key"][:8])
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", str(p)) for p in parts)


def file_name(record: dict[str, Any], to: str) -> str:
    _check_target(to)
    return f"{stem(record)}.{SUFFIXES[to]}"


def chosen(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The measured record whose key starts with `key` (at least 6 characters, as the table's `key` column shows)."""
    found = {r["key"]: r for r in records if r["key"].startswith(key) and r["kind"] == "throughput"}
    if len(key) < 6 or len(found) != 1:
        raise ValueError(f"key={key} matches {len(found)} measured records; give 6 or more leading characters of "
                         f"one record's key (`pretrain-bench table --format json` lists them)")
    [r] = found.values()
    if r["status"] != "ok":
        raise ValueError(f"record {r['key'][:12]} ended `{r['status']}`: only a measured method can be exported")
    return r


def _config(record: dict[str, Any]) -> BenchConfig:
    return from_dict(record["config"])


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


def _sku(record: dict[str, Any]) -> str:
    return record["env"].get("gpu_sku") or record["config"]["hardware"]["gpu"]


def to_hf_training_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-able kwargs for `transformers.TrainingArguments(output_dir=..., **kwargs)` that reproduce the cell."""
    return hf_training_arguments(_config(record), _sku(record))


def to_training_args_json(record: dict[str, Any]) -> dict[str, Any]:
    """The flat file: TrainingArguments' own fields only, output_dir included."""
    return flat_training_arguments(_config(record), _sku(record), output_dir=f"checkpoints/{stem(record)}")


def script_settings(cfg: BenchConfig) -> list[str]:
    """The measured method's tricks that no exported config can express: the training script must apply them."""
    tr, out = cfg.tricks, []
    if tr.activation_checkpointing and tr.ac_every > 1:
        out.append(f"model: checkpoint every {tr.ac_every}th block only: model.activation_checkpointing_enable("
                   f"every_n_layers={tr.ac_every}, activation_checkpointing_kwargs={{'use_reentrant': False}})")
    if tr.fused_linear_ce:
        out.append("model: fused linear + cross-entropy head: pretrain_bench.train.fused_ce.apply(model) (the "
                   "Trainer's use_liger_kernel=True is a GPU equivalent, not the kernel measured)")
    if tr.attention_backend != "auto":
        out.append(f"process: only the {tr.attention_backend} SDPA kernel: "
                   f"pretrain_bench.train.speedups.set_sdpa_backend({tr.attention_backend!r})")
    if tr.fp8:
        out.append("model, before compile and sharding: torchao.float8.convert_to_float8_training(model, "
                   "module_filter_fn=pretrain_bench.train.speedups.fp8_filter)")
    if tr.tf32 and tr.compile and tr.compile_mode.startswith("max-autotune"):
        out.append("process, after building TrainingArguments: torch.set_float32_matmul_precision('high') "
                   "(transformers' tf32 writes torch's fp32_precision API, after which the getters max-autotune "
                   "reads raise; pytorch/pytorch#189955)")
    return out


def model_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for building the model (`from_config` / `from_pretrained`), not TrainingArguments."""
    return {"attn_implementation": record["config"]["tricks"]["attention"]}


def launch_command(record: dict[str, Any], to: str) -> str:
    """How to start the user's training script with the exported config (`to` as in write_export); an HF script
    takes the TrainingArguments JSON as its only argument, as the HF example scripts do."""
    name = file_name(record, to)
    hw = record["config"]["hardware"]
    if to == "accelerate":
        node_flags = " --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR" if hw["nodes"] > 1 else ""
        return f"accelerate launch --config_file {name}{node_flags} {_SCRIPT}"
    if to == "deepspeed":
        nodes = f" --hostfile hostfile --num_nodes={hw['nodes']}" if hw["nodes"] > 1 else ""
        return f"deepspeed{nodes} --num_gpus={hw['gpus_per_node']} {_SCRIPT} --deepspeed_config {name}"
    if record["config"]["strategy"]["backend"] == "single":
        return f"python {_SCRIPT} {name}"
    node_flags = (f" --nnodes={hw['nodes']} --node-rank=$NODE_RANK --rdzv-backend=c10d "
                  f"--rdzv-endpoint=$MASTER_ADDR:29500" if hw["nodes"] > 1 else "")
    return f"torchrun{node_flags} --nproc-per-node={hw['gpus_per_node']} {_SCRIPT} {name}"


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


def notes(record: dict[str, Any], to: str) -> str:
    """What the exported file cannot hold, as markdown: where it came from, how to load and launch it, and what the
    script must set itself."""
    c, name = record["cell"], file_name(record, to)
    tput = record.get("throughput") or {}
    lines = [f"# pretrain-bench export: {c['model']} on {c['hardware']} · {c['strategy']} · {c['tricks']}", "",
             f"- record `{record['key']}`: micro-batch {c['micro_batch']} × accumulation {c['grad_accum']}"
             + (f", {tput['tokens_per_s']:,.0f} {tput.get('unit', 'token')}s/s measured" if tput else ""),
             f"- file: `{name}`", f"- launch: `{launch_command(record, to)}`"]
    if to == "hf":
        lines.append("- load: `HfArgumentParser(TrainingArguments).parse_json_file(\"" + name + "\")` (the HF "
                     "example scripts do this when their only argument is a .json file)")
    lines.append(f"- model: `from_config(config, **{model_kwargs(record)!r})`")
    lines += [f"- {setting}" for setting in script_settings(_config(record))]
    return "\n".join(lines) + "\n"


def write_export(record: dict[str, Any], to: str, out_dir: str | Path) -> list[Path]:
    """Write the export for `to` (hf | deepspeed | accelerate) and its notes into out_dir: [file, notes]."""
    name = file_name(record, to)
    if to == "accelerate":
        text = to_accelerate_yaml(record)
    else:
        text = json.dumps(to_training_args_json(record) if to == "hf" else to_deepspeed_json(record), indent=2) + "\n"
    path, notes_path = Path(out_dir) / name, Path(out_dir) / f"{stem(record)}.{to}-notes.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    notes_path.write_text(notes(record, to))
    return [path, notes_path]
