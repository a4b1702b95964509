"""Exported configs load into the libraries that consume them: transformers' TrainingArguments, DeepSpeed's config
class and `accelerate launch`'s config parsing, and they say what the measured cell ran.

No GPU here, so TrainingArguments' three hardware probes (bf16 and TF32 support, switching TF32 on) answer as on
the Ampere GPUs the records name; everything else is the libraries' own validation.
"""

from __future__ import annotations

import json
import os
import types
from unittest import mock

import pytest
import yaml

from pretrain_bench import config
from pretrain_bench.analysis import export, record

STRATEGY_HARDWARE = {"single": "1xa100", "ddp": "4xa100", "fsdp": "4xa100", "fsdp-grad-op": "2x8xa100",
                     "zero2": "4xa100", "zero3-offload": "4xa100"}
DEEPSPEED = ("zero1", "zero2", "zero3", "zero2-offload", "zero3-offload")


def make(*overrides: str) -> dict:
    """An ok record of pythia-1b (bf16 recipe) with the free-lunch tricks plus activation checkpointing."""
    cfg = config.compose(["model=pythia-1b", "hardware=4xa100", "tricks=free-lunch-ac", "micro_batch=16",
                          *overrides])
    env = {**record.library_versions(), "gpu_sku": cfg.hardware.gpu, "device_name": "test"}
    step_s = [30.0, 31.0, 32.0, 30.5, 31.5]
    measurement = {"step_s": step_s, "legacy_step_s": step_s, "first_step_s": 90.0, "setup_s": 5.0,
                   "timed_wall_s": sum(step_s), "losses": [10.9], "grad_norms": [1.0], "skipped_steps": 0,
                   "peak_mem_bytes": 30 * 2**30, "mem_kind": "cuda_max_allocated"}
    return record.make_record(cfg, record.cell_key(cfg, env, cfg.hardware.gpu), "ok", None, measurement, env)


def of(strategy: str) -> dict:
    return make(f"strategy={strategy}", f"hardware={STRATEGY_HARDWARE.get(strategy, '4xa100')}")


@pytest.fixture(autouse=True)
def isolated():
    """The libraries keep process-wide state (environment variables, accelerate's state, DeepSpeed's weakref)."""
    with mock.patch.dict(os.environ):
        yield
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def training_arguments(monkeypatch, tmp_path):
    import transformers.training_args as ta

    monkeypatch.setattr(ta, "is_torch_bf16_gpu_available", lambda: True)
    monkeypatch.setattr(ta, "is_torch_tf32_available", lambda: True)
    monkeypatch.setattr(ta, "enable_tf32", lambda enabled: None)
    return lambda kwargs: ta.TrainingArguments(output_dir=str(tmp_path), **kwargs)


def deepspeed_config_class(monkeypatch, world_size: int):
    """DeepSpeed's config class, checking batch sizes as a rank of `world_size` processes would."""
    import deepspeed.runtime.config as ds_config

    monkeypatch.setattr(ds_config, "dist", types.SimpleNamespace(get_rank=lambda: 0,
                                                                 get_world_size=lambda *group: world_size))
    return ds_config.DeepSpeedConfig


def test_training_arguments_carry_the_cell_and_recipe(training_arguments):
    from transformers.trainer_utils import SchedulerType

    kwargs = export.to_hf_training_arguments(of("ddp"))
    assert json.loads(json.dumps(kwargs)) == kwargs
    args = training_arguments(kwargs)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 16)  # 4 × 16 × 16 = 1024
    assert (args.max_steps, args.warmup_steps, args.learning_rate) == (143_000, 1430, 3e-4)
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay, args.max_grad_norm) == (
        0.9, 0.95, 1e-8, 0.01, 1.0)
    assert args.lr_scheduler_type == SchedulerType.COSINE_WITH_MIN_LR
    assert args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert args.bf16 and not args.fp16 and args.tf32 and args.torch_compile and args.optim == "adamw_torch_fused"
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert export.model_kwargs(of("ddp")) == {"attn_implementation": "sdpa"}


def test_naive_fp32_and_tf32_only_where_the_gpu_has_it(training_arguments):
    naive = training_arguments(export.to_hf_training_arguments(make("strategy=ddp", "tricks=naive")))
    assert not (naive.bf16 or naive.fp16 or naive.tf32 or naive.torch_compile or naive.activation_checkpointing)
    assert naive.optim == "adamw_torch"
    v100 = export.to_hf_training_arguments(make("strategy=ddp", "hardware=8xv100", "micro_batch=8",
                                                "tricks=free-lunch", "tricks.precision=fp16"))
    assert v100["fp16"] and not v100["bf16"] and not v100["tf32"]  # Volta has no TF32: TrainingArguments would refuse


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp", "fsdp-grad-op", "zero2", "zero3-offload"])
def test_training_arguments_construct(training_arguments, strategy):
    args = training_arguments(export.to_hf_training_arguments(of(strategy)))
    assert bool(args.fsdp) == strategy.startswith("fsdp")
    assert bool(args.deepspeed) == strategy.startswith("zero")


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp-grad-op"])
def test_fsdp_arguments_build_accelerates_fsdp2_plugin(training_arguments, strategy):
    from accelerate.utils import FullyShardedDataParallelPlugin

    args = training_arguments(export.to_hf_training_arguments(of(strategy)))
    assert not args.activation_checkpointing  # FSDP's own checkpointing instead (no extra all-gather)
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    assert plugin.fsdp_version == 2 and plugin.activation_checkpointing
    assert plugin.reshard_after_forward == (strategy == "fsdp")
    assert plugin.transformer_cls_names_to_wrap == ["GPTNeoXLayer"]


@pytest.mark.parametrize("strategy", ["zero2", "zero3-offload"])
def test_hf_deepspeed_config_is_filled_consistently(training_arguments, monkeypatch, strategy):
    """HF fills the "auto" values from the TrainingArguments: no mismatch, the measured config, and DeepSpeed
    accepts it (for this one-process machine: train_batch_size is micro-batch × accumulation × 1)."""
    args = training_arguments(export.to_hf_training_arguments(of(strategy)))
    assert args.hf_deepspeed_config.mismatches == []
    filled, measured = args.hf_deepspeed_config.config, export.to_deepspeed_json(of(strategy))
    ignored = ("train_batch_size", "steps_per_print")  # world size of this machine; accelerate silences logging
    assert {k: v for k, v in filled.items() if k not in ignored} == {
        k: v for k, v in measured.items() if k not in ignored}
    deepspeed_config_class(monkeypatch, world_size=1)(filled)


@pytest.mark.parametrize("strategy", DEEPSPEED)
def test_deepspeed_json_validates_with_deepspeed(monkeypatch, strategy):
    ds = export.to_deepspeed_json(of(strategy))
    checked = deepspeed_config_class(monkeypatch, world_size=4)(ds)
    assert (checked.train_batch_size, checked.zero_optimization_stage) == (1024, ds["zero_optimization"]["stage"])
    assert checked.gradient_clipping == 1.0


def test_deepspeed_validation_is_real(monkeypatch):
    """The same config on a world size it was not made for fails DeepSpeed's batch check."""
    with pytest.raises(AssertionError, match="train_batch_size"):
        deepspeed_config_class(monkeypatch, world_size=2)(export.to_deepspeed_json(of("zero2")))


def test_deepspeed_json_rejects_other_strategies():
    with pytest.raises(ValueError, match=r"'fsdp'.*zero1, zero2, zero2-offload, zero3, zero3-offload"):
        export.to_deepspeed_json(of("fsdp"))


def launch_settings(path, monkeypatch):
    """What `accelerate launch --config_file path` derives, and the plugin its environment builds."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(path), "train.py"]))
    plugin = None
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        monkeypatch.setattr(os, "environ", env)
        plugin = DeepSpeedPlugin()
    elif args.use_fsdp:
        monkeypatch.setattr(os, "environ", prepare_multi_gpu_env(args))
        plugin = FullyShardedDataParallelPlugin()
    return args, defaults, plugin


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp-grad-op", "zero3-offload"])
def test_accelerate_yaml_loads_into_accelerate_launch(tmp_path, monkeypatch, strategy):
    r = of(strategy)
    path, _ = export.write_export(r, "accelerate", tmp_path)
    assert yaml.safe_load(path.read_text()) == export.accelerate_config(r)
    args, defaults, plugin = launch_settings(path, monkeypatch)
    assert defaults.distributed_type == export.accelerate_config(r)["distributed_type"]
    assert (args.num_processes, args.num_machines) == (r["cell"]["world_size"], r["config"]["hardware"]["nodes"])
    assert args.mixed_precision == "bf16" and args.dynamo_backend == "INDUCTOR" and args.dynamo_use_regional_compilation
    assert args.multi_gpu == (strategy == "ddp")
    if strategy == "fsdp-grad-op":
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is False
        assert plugin.transformer_cls_names_to_wrap == ["GPTNeoXLayer"] and plugin.activation_checkpointing
    if strategy == "zero3-offload":
        assert (plugin.zero_stage, plugin.offload_optimizer_device, plugin.offload_param_device) == (3, "cpu", "cpu")
        assert plugin.gradient_accumulation_steps == 16 and plugin.gradient_clipping == 1.0 and plugin.zero3_init_flag


def test_accelerate_yaml_notes_what_the_script_sets():
    text = export.to_accelerate_yaml(of("ddp"))
    assert "attn_implementation='sdpa'" in text and "gradient_checkpointing_enable" in text
    assert f"accelerate launch --config_file {export.stem(of('ddp'))}.accelerate.yaml train.py" in text


def test_tricks_no_config_can_express_are_spelled_out(training_arguments):
    r = make("strategy=ddp", "tricks=free-lunch-sac", "tricks.fused_linear_ce=true",
             "tricks.compile_mode=max-autotune-no-cudagraphs", "tricks.attention_backend=flash")
    settings = export.script_settings(config.from_dict(r["config"]))
    where = ["model", "model", "process", "process, after building TrainingArguments"]
    assert [s.split(":")[0] for s in settings] == where
    assert "every_n_layers=2" in settings[0] and "fused_ce.apply" in settings[1] and "'flash'" in settings[2]
    assert "set_float32_matmul_precision('high')" in settings[3]  # max-autotune with tf32: transformers' TF32 write
    kwargs = export.to_hf_training_arguments(r)
    assert training_arguments(kwargs).torch_compile_mode == "max-autotune-no-cudagraphs"
    assert all(s in export.to_accelerate_yaml(r) and s in export.notes(r, "hf") for s in settings)
    assert export.script_settings(config.from_dict(of("ddp")["config"])) == []


def test_launch_commands():
    single, zero2 = of("single"), of("zero2")
    assert export.launch_command(single, "hf") == f"python train.py {export.stem(single)}.training_args.json"
    assert export.launch_command(zero2, "hf") == f"torchrun --nproc-per-node=4 train.py {export.stem(zero2)}" \
                                                 ".training_args.json"
    multi = export.launch_command(of("fsdp-grad-op"), "hf")
    assert "--nnodes=2" in multi and "--nproc-per-node=8" in multi and "$MASTER_ADDR" in multi
    assert export.launch_command(zero2, "deepspeed").endswith(f"--deepspeed_config {export.stem(zero2)}.deepspeed.json")


def test_write_export_files(tmp_path):
    r = of("zero2")
    path, notes = export.write_export(r, "hf", tmp_path)
    assert path.name == f"pythia-1b_4xa100_zero2_free-lunch+ac_mb16_{r['key'][:8]}.training_args.json"
    assert json.loads(path.read_text()) == {"output_dir": f"checkpoints/{export.stem(r)}",
                                            **export.to_hf_training_arguments(r)}
    text = notes.read_text()
    assert r["key"] in text and "attn_implementation" in text and "torchrun --nproc-per-node=4 train.py" in text
    ds, _ = export.write_export(r, "deepspeed", tmp_path / "sub")
    assert ds.name.endswith("_mb16_" + r["key"][:8] + ".deepspeed.json")
    assert json.loads(ds.read_text()) == export.to_deepspeed_json(r)
    with pytest.raises(ValueError, match="allowed: hf, deepspeed, accelerate"):
        export.write_export(r, "megatron", tmp_path)


@pytest.mark.parametrize("strategy", ["single", "fsdp", "zero3-offload"])
def test_training_args_file_parses_as_is(training_arguments, tmp_path, strategy):
    """HfArgumentParser reads the file without a key to drop, alone and beside an example script's own dataclasses
    (run_clm.py's parser: model, data and training arguments)."""
    import dataclasses

    from transformers import HfArgumentParser, TrainingArguments

    @dataclasses.dataclass
    class ModelArguments:  # the shape of the HF examples' own argument classes: every field has a default
        model_name_or_path: str | None = None

    training_arguments({})  # patches TrainingArguments' GPU probes (no GPU here)
    r = of(strategy)
    path, _ = export.write_export(r, "hf", tmp_path)
    (args,) = HfArgumentParser(TrainingArguments).parse_json_file(path)
    assert args.per_device_train_batch_size == 16 and args.bf16 and args.torch_compile
    assert args.output_dir == f"checkpoints/{export.stem(r)}"
    model_args, args = HfArgumentParser((ModelArguments, TrainingArguments)).parse_json_file(path)
    assert model_args.model_name_or_path is None and args.learning_rate == 3e-4
    assert bool(args.deepspeed) == (strategy == "zero3-offload") and bool(args.fsdp) == (strategy == "fsdp")
