"""Every config composes; shapes and recipes match their sources; bad input fails early, naming the key."""

from __future__ import annotations

import pytest

from pretrain_bench import config
from pretrain_bench.spec import gpus, models

# flash needs flash_attn + a GPU (test_bad_input); free-lunch-fp8 an FP8 GPU + torchao (test_fast_methods)
PARTNER = {"strategy": {"single": ["hardware=cpu-1"]}, "tricks": {"flash": None, "free-lunch-fp8": None}}


@pytest.mark.parametrize("group", ["model", "hardware", "strategy", "tricks"])
def test_every_config_composes(group):
    for name in config.options(group):
        extra = PARTNER.get(group, {}).get(name, ["hardware=cpu-2", "strategy=ddp"] if group != "hardware" else [])
        if extra is None:  # needs a GPU stack this machine may lack: checked elsewhere
            continue
        overrides = [f"{group}={name}", *extra]
        if group == "hardware":
            overrides.append("strategy=single" if name.startswith("1x") or name == "cpu-1" else "strategy=ddp")
            overrides += ["model=pythia-160m", "micro_batch=1"]
        cfg = config.compose(overrides)
        assert cfg is not None


PYTHIA = {  # name: (hidden, layers, heads, lr, precision, total params) from Biderman et al. 2023, Table 1
    "14m": (128, 6, 4, 1e-3, "fp16", 14_067_712),
    "70m": (512, 6, 8, 1e-3, "fp16", 70_426_624),
    "160m": (768, 12, 12, 6e-4, "fp16", 162_322_944),
    "410m": (1024, 24, 16, 3e-4, "fp16", 405_334_016),
    "1b": (2048, 16, 8, 3e-4, "bf16", 1_011_781_632),
    "1.4b": (2048, 24, 16, 2e-4, "fp16", 1_414_647_808),
    "2.8b": (2560, 32, 32, 1.6e-4, "fp16", 2_775_208_960),
    "6.9b": (4096, 32, 32, 1.2e-4, "fp16", 6_857_302_016),
    "12b": (5120, 36, 40, 1.2e-4, "fp16", 11_846_072_320),
}


@pytest.mark.parametrize("size", sorted(PYTHIA))
def test_pythia_shapes_and_recipe(size):
    hidden, layers, heads, lr, precision, params = PYTHIA[size]
    m = config.compose([f"model=pythia-{size}"]).model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.recipe.lr, m.recipe.precision) == (
        hidden, layers, heads, lr, precision)
    vocab = {"6.9b": 50432, "12b": 50688}.get(size, 50304)  # the two largest were padded further
    assert (m.vocab_size, m.seq_len, m.global_batch, m.rotary_pct, m.parallel_residual, m.tie_embeddings) == (
        vocab, 2048, 1024, 0.25, True, False)
    r = m.recipe
    assert (r.steps, r.beta1, r.beta2, r.eps, r.weight_decay, r.grad_clip, r.min_lr_ratio, r.warmup_ratio) == (
        143_000, 0.9, 0.95, 1e-8, 0.01, 1.0, 0.1, 0.01)
    # The parameter counts the Pythia model cards report (HF `num_parameters()` of the released checkpoints).
    assert models.num_params(m) == params


def test_derived_accumulation_and_labels():
    cfg = config.compose(["model=pythia-1b", "hardware=cpu-2", "strategy=zero3-offload", "tricks=free-lunch-ac",
                          "micro_batch=16"])
    assert cfg.grad_accum == 1024 // (2 * 16)
    assert config.strategy_label(cfg.strategy) == "zero3-offload"
    assert config.tricks_label(cfg.tricks) == "free-lunch+ac"
    assert cfg.precision == "bf16"  # free-lunch uses the recipe's precision
    combo = config.compose(["tricks=bf16", "tricks.attention=sdpa", "tricks.compile=true"])
    assert config.tricks_label(combo.tricks) == "bf16+sdpa+compile"


def test_hardware_catalogue_is_complete():
    for key, spec in gpus.CATALOGUE.items():
        if key in ("cpu", "unknown"):  # no datasheet: measured (cpu) or given by the run (unknown)
            continue
        assert spec.peak("fp16") and spec.peak("fp32") and spec.memory_gib > 0 and spec.price_per_hour
        assert spec.peak("fp16") > spec.peak("fp32")
    assert gpus.identify("NVIDIA H100 80GB HBM3") == "h100"
    assert gpus.identify("NVIDIA A100-SXM4-40GB") == "a100-40gb"
    assert gpus.identify("NVIDIA GeForce RTX 3090") == "rtx3090"
    assert gpus.peak_dtype("fp32", tf32=True) == "tf32"


@pytest.mark.parametrize("overrides, key, words", [
    (["model=pythia-99m"], "model", ["pythia-99m", "pythia-160m"]),
    (["hardware=cpu-2", "strategy=ddp", "micro_batch=3"], "micro_batch", ["divisible", "1, 2, 4"]),
    (["hardware=cpu-2", "strategy=ddp", "model.global_batch=10", "micro_batch=2"], "micro_batch", ["divisible"]),
    (["hardware=cpu-1", "strategy=ddp"], "strategy", ["single"]),
    (["hardware=cpu-2", "strategy=single"], "strategy", ["ddp"]),
    (["model.hiden_size=3"], "model.hiden_size", ["hidden_size"]),
    (["micro_batch=abc"], "micro_batch", ["abc"]),
    (["micro_batch=0"], "micro_batch", ["≥ 1"]),
    (["steps=2"], "steps", ["≥ 5"]),
    (["hardware.gpu=tpu"], "hardware.gpu", ["h100", "a100-80gb"]),
    (["tricks.attention=flash3"], "tricks.attention", ["eager", "sdpa"]),
    (["tricks=flash"], "tricks.attention", ["flash_attention_2"]),
    (["hardware=8xv100", "strategy=ddp", "tricks=bf16", "micro_batch=1"], "tricks.precision", ["Ampere", "fp16"]),
    (["strategy.zero_stage=4", "strategy.backend=deepspeed", "strategy=zero1", "hardware=cpu-2"],
     "strategy.zero_stage", ["1, 2, 3"]),
    (["model.num_heads=5"], "model.num_heads", ["hidden_size"]),
    (["hardware=cpu-2", "hardware.memory_gib=0"], "hardware.memory_gib", ["> 0", "got 0"]),
    (["hardware=1xh100", "hardware.memory_gib=40"], "hardware.memory_gib", ["CPU", "catalogue"]),
])
def test_bad_input_fails_naming_the_key(overrides, key, words):
    with pytest.raises(config.ConfigError) as err:
        config.compose(overrides)
    assert err.value.key == key
    for word in words:
        assert word in str(err.value)


def test_deepspeed_fp16_on_cpu_is_rejected_before_launch():
    with pytest.raises(config.ConfigError, match="no fp16 mode"):
        config.compose(["hardware=cpu-2", "strategy=zero2", "tricks=fp16"])
