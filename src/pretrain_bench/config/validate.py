"""Validation with clear errors: one function per config group, each naming the bad key and the allowed values.

The schema already rejected unknown keys and wrong types; these checks cover sizes, divisibility and combinations
that cannot run, and they run before any worker process or GPU time is spent. No torch here.
"""

from __future__ import annotations

import importlib.util
import math

from pretrain_bench.config.checks import one_of, positive
from pretrain_bench.config.schema import (
    ATTENTIONS,
    BACKENDS,
    DATA_SOURCES,
    LOGGERS,
    MIN_TIMED_STEPS,
    MULTINODE,
    RECIPE_PRECISIONS,
    TIMINGS,
    TRICK_PRECISIONS,
    BenchConfig,
    ConfigError,
    HardwareConfig,
    ModelConfig,
    RecipeConfig,
    StrategyConfig,
)
from pretrain_bench.config.validate_tricks import validate_fast_methods
from pretrain_bench.spec import gpus
from pretrain_bench.spec.models import CAUSAL_LM_FAMILIES, FAMILIES


def validate(cfg: BenchConfig) -> None:
    """Reject configs that cannot run, before any worker process or GPU time is spent: one check per group, in the
    order a reader meets the groups, so that the first error named is the first bad key."""
    validate_model(cfg.model)
    validate_recipe(cfg.model.recipe)
    validate_hardware(cfg.hardware)
    validate_strategy(cfg.strategy, cfg.world_size)
    validate_tricks(cfg)
    validate_run(cfg)


def validate_model(m: ModelConfig) -> None:
    one_of("model.family", m.family, FAMILIES)
    for key in ("hidden_size", "num_layers", "num_heads", "vocab_size", "seq_len", "global_batch"):
        positive(f"model.{key}", getattr(m, key))
    if m.intermediate_size is not None:
        positive("model.intermediate_size", m.intermediate_size)
    if m.hidden_size % m.num_heads:
        raise ConfigError("model.num_heads", f"must divide model.hidden_size ({m.hidden_size}), got {m.num_heads}")
    if m.num_kv_heads is not None:
        if m.family != "llama":
            raise ConfigError("model.num_kv_heads", f"grouped-query attention is built for family llama only, "
                                                    f"not {m.family!r}; leave model.num_kv_heads unset")
        positive("model.num_kv_heads", m.num_kv_heads)
        if m.num_heads % m.num_kv_heads:
            raise ConfigError("model.num_kv_heads", f"must divide model.num_heads ({m.num_heads}), "
                                                    f"got {m.num_kv_heads}")
    _validate_family(m)
    if not m.rope_theta > 0:  # also rejects nan
        raise ConfigError("model.rope_theta", f"must be > 0, got {m.rope_theta}")
    if not 0 < m.rotary_pct <= 1:
        raise ConfigError("model.rotary_pct", f"must be in (0, 1], got {m.rotary_pct}")


def validate_recipe(r: RecipeConfig) -> None:
    positive("model.recipe.steps", r.steps)
    if not (math.isfinite(r.lr) and r.lr > 0):
        raise ConfigError("model.recipe.lr", f"must be a finite number > 0, got {r.lr}")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(r, key) < 1:
            raise ConfigError(f"model.recipe.{key}", f"must be in [0, 1), got {getattr(r, key)}")
    if not (math.isfinite(r.eps) and r.eps > 0):
        raise ConfigError("model.recipe.eps", f"must be a finite number > 0, got {r.eps}")
    for key in ("weight_decay", "grad_clip"):
        if not (math.isfinite(getattr(r, key)) and getattr(r, key) >= 0):
            raise ConfigError(f"model.recipe.{key}", f"must be a finite number ≥ 0 (0: off), got {getattr(r, key)}")
    if not 0 <= r.warmup_ratio < 1:
        raise ConfigError("model.recipe.warmup_ratio", f"must be in [0, 1), got {r.warmup_ratio}")
    if not 0 <= r.min_lr_ratio <= 1:
        raise ConfigError("model.recipe.min_lr_ratio", f"must be in [0, 1], got {r.min_lr_ratio}")
    one_of("model.recipe.precision", r.precision, RECIPE_PRECISIONS)


def validate_hardware(hw: HardwareConfig) -> None:
    one_of("hardware.gpu", hw.gpu, tuple(sorted(gpus.CATALOGUE)))
    positive("hardware.gpus_per_node", hw.gpus_per_node)
    positive("hardware.nodes", hw.nodes)
    if hw.memory_gib is not None:
        if not hw.memory_gib > 0:
            raise ConfigError("hardware.memory_gib", f"must be a memory budget in GiB > 0, got {hw.memory_gib}")
        if hw.gpu != "cpu":  # a GPU's memory is the catalogue's, enforced by the device itself
            raise ConfigError("hardware.memory_gib", f"is a budget for CPU processes (hardware.gpu=cpu); "
                                                     f"{hw.gpu} has its catalogue memory")


def validate_strategy(st: StrategyConfig, world: int) -> None:
    one_of("strategy.backend", st.backend, BACKENDS)
    if st.backend == "deepspeed":
        one_of("strategy.zero_stage", st.zero_stage, (1, 2, 3))
    elif st.zero_stage:
        raise ConfigError("strategy.zero_stage", f"only the deepspeed backend has ZeRO stages; got backend "
                                                 f"{st.backend!r} with zero_stage={st.zero_stage}")
    if (st.offload_optimizer or st.offload_params) and st.backend != "deepspeed":
        raise ConfigError("strategy.offload_optimizer", "CPU offload is implemented for the deepspeed backend only")
    if st.offload_params and st.zero_stage != 3:
        raise ConfigError("strategy.offload_params", "parameter offload needs strategy.zero_stage=3")
    # FSDP2 and ZeRO at world size 1 shard nothing, but run their code paths (wrapping, meta-device build,
    # zero.Init, their optimizer steps): the GPU check tests them on one GPU. The search never proposes them there.
    if world == 1 and st.backend == "ddp":
        raise ConfigError("strategy", "ddp on 1 device has nothing to distribute; use strategy=single (or fsdp / a "
                                      "zero strategy to run its code path on one device)")
    if world > 1 and st.backend == "single":
        raise ConfigError("strategy", f"strategy=single runs one process, but the hardware has {world} devices; "
                                      f"allowed: ddp, fsdp, fsdp-grad-op, zero1, zero2, zero3 and -offload variants")


def validate_tricks(cfg: BenchConfig) -> None:
    """Precision and attention, then the faster methods (checkpointing, SDPA kernel, compile mode, FP8)."""
    tr, hw, st = cfg.tricks, cfg.hardware, cfg.strategy
    one_of("tricks.precision", tr.precision, TRICK_PRECISIONS)
    one_of("tricks.attention", tr.attention, ATTENTIONS)
    spec = gpus.gpu(hw.gpu)
    if hw.peak_tflops is not None and not hw.peak_tflops > 0:
        raise ConfigError("hardware.peak_tflops", f"must be a dense peak in TFLOP/s > 0, got {hw.peak_tflops}")
    if cfg.precision == "bf16" and spec.arch not in ("cpu", "unknown") and not spec.supports_bf16:
        raise ConfigError("tricks.precision", f"bf16 needs an Ampere or newer GPU; {spec.name} supports: "
                                              f"{', '.join(d for d in spec.peak_flops if d != 'fp8')}")
    if cfg.precision == "fp16" and st.backend == "deepspeed" and hw.gpu == "cpu":
        raise ConfigError("tricks.precision", "DeepSpeed has no fp16 mode on its CPU accelerator; allowed here: "
                                              "fp32, bf16 (or fp16 with single, ddp, fsdp)")
    if tr.attention == "flash_attention_2":
        if hw.gpu == "cpu":
            raise ConfigError("tricks.attention", "flash_attention_2 needs a GPU; allowed on CPU: eager, sdpa")
        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("tricks.attention", "flash_attention_2 needs the `flash_attn` package, which is not "
                                                  "installed (transformers would try to download kernels); "
                                                  "allowed here: eager, sdpa")
    validate_fast_methods(cfg)


def validate_run(cfg: BenchConfig) -> None:
    """Data, timing, target, and the run's own keys: steps, time-outs, and a micro-batch that splits the batch."""
    m = cfg.model
    one_of("data.source", cfg.data.source, DATA_SOURCES)
    one_of("timing", cfg.timing, TIMINGS)
    validate_target(cfg)
    positive("peers.repeats", cfg.peers.repeats)
    one_of("multinode", cfg.multinode, MULTINODE)
    one_of("logger", cfg.logger, LOGGERS)
    positive("collective_timeout_s", cfg.collective_timeout_s)
    positive("micro_batch", cfg.micro_batch)
    positive("steps", cfg.steps, MIN_TIMED_STEPS)
    positive("warmup_steps", cfg.warmup_steps, 0)
    positive("search_repeats", cfg.search_repeats, 0)
    if cfg.timeout_s is not None:
        positive("timeout_s", cfg.timeout_s)
    per_step = cfg.world_size * cfg.micro_batch
    if m.global_batch % per_step:
        fits = divisors(m.global_batch // cfg.world_size) if m.global_batch % cfg.world_size == 0 else []
        raise ConfigError("micro_batch", f"model.global_batch ({m.global_batch}) must be divisible by world size × "
                                         f"micro_batch ({cfg.world_size} × {cfg.micro_batch} = {per_step}); "
                                         f"micro_batch values that divide it: {', '.join(map(str, fits)) or 'none'}")


def _validate_family(m: ModelConfig) -> None:
    """The shape keys that only some families read (sizes are checked for all, so that no bad value waits)."""
    if not 0 < m.mask_prob < 1:
        raise ConfigError("model.mask_prob", f"must be in (0, 1), got {m.mask_prob}")
    for key in ("state_size", "expand", "conv_kernel", "image_size", "patch_size", "num_channels"):
        positive(f"model.{key}", getattr(m, key))
    positive("model.num_classes", m.num_classes, 2)
    if m.family == "vit":
        if m.image_size % m.patch_size:
            raise ConfigError("model.patch_size", f"must divide model.image_size ({m.image_size}), got "
                                                  f"{m.patch_size}")
    if m.family == "convnext":
        if not m.depths or len(m.depths) != len(m.widths) or min(m.depths + m.widths) < 1:
            raise ConfigError("model.depths", f"convnext needs model.depths and model.widths of equal, non-zero "
                                              f"length with positive entries; got {m.depths} and {m.widths}")
        if (m.hidden_size, m.num_layers) != (m.widths[-1], sum(m.depths)):
            raise ConfigError("model.hidden_size", f"convnext: hidden_size must be the last width ({m.widths[-1]}) "
                                                   f"and num_layers the number of blocks ({sum(m.depths)})")
        if m.image_size % (4 * 2 ** (len(m.depths) - 1)):
            raise ConfigError("model.image_size", f"must be divisible by {4 * 2 ** (len(m.depths) - 1)} (the stem "
                                                  f"and {len(m.depths) - 1} down-samplings), got {m.image_size}")


def divisors(n: int) -> list[int]:
    """Every divisor of n, in O(√n): the micro-batch sizes that split a per-device batch evenly."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def validate_target(cfg: BenchConfig) -> None:
    t = cfg.target
    for key in ("eval_every", "eval_sequences", "max_steps", "seeds"):
        positive(f"target.{key}", getattr(t, key))
    if cfg.data.source != "synthetic" and cfg.model.family not in CAUSAL_LM_FAMILIES:
        raise ConfigError("data.source", f"real text trains the causal language models only "
                                         f"({', '.join(CAUSAL_LM_FAMILIES)}); model.family {cfg.model.family!r} "
                                         f"takes data=synthetic")
    if t.loss is not None:
        if t.loss <= 0:
            raise ConfigError("target.loss", f"must be > 0, got {t.loss}")
        if cfg.data.source == "synthetic":
            raise ConfigError("data", "a target loss needs real text (uniform random tokens cannot be learned); "
                                      "allowed: data=stdlib, or data=files data.paths=[...]")
    if t.eval_sequences < cfg.world_size:
        raise ConfigError("target.eval_sequences", f"must be ≥ the world size ({cfg.world_size}) so that every rank "
                                                   f"evaluates the same number of sequences")
