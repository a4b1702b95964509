"""Validation with clear errors: one function per config group, each naming the bad key and the allowed values.

The schema already rejected unknown keys and wrong types; these checks cover sizes, divisibility and combinations
that cannot run, and they run before any worker process or GPU time is spent. No torch here.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from pretrain_bench.config.labels import strategy_label
from pretrain_bench.config.schema import (
    ATTENTION_BACKENDS,
    ATTENTIONS,
    BACKENDS,
    COMPILE_MODES,
    CUDA_GRAPH_COMPILE_MODES,
    DATA_SOURCES,
    FP8_UNSUPPORTED_FAMILIES,
    GPU_ATTENTION_BACKENDS,
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
from pretrain_bench.spec import gpus
from pretrain_bench.spec.models import ATTENTION_FREE_FAMILIES, CAUSAL_LM_FAMILIES, FAMILIES


def _positive(key: str, value: int | float, minimum: int | float = 1) -> None:
    if value < minimum:
        raise ConfigError(key, f"must be ≥ {minimum}, got {value}")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")


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
    _one_of("model.family", m.family, FAMILIES)
    for key in ("hidden_size", "num_layers", "num_heads", "vocab_size", "seq_len", "global_batch"):
        _positive(f"model.{key}", getattr(m, key))
    if m.intermediate_size is not None:
        _positive("model.intermediate_size", m.intermediate_size)
    if m.hidden_size % m.num_heads:
        raise ConfigError("model.num_heads", f"must divide model.hidden_size ({m.hidden_size}), got {m.num_heads}")
    if m.num_kv_heads is not None:
        if m.family != "llama":
            raise ConfigError("model.num_kv_heads", f"grouped-query attention is built for family llama only, "
                                                    f"not {m.family!r}; leave model.num_kv_heads unset")
        _positive("model.num_kv_heads", m.num_kv_heads)
        if m.num_heads % m.num_kv_heads:
            raise ConfigError("model.num_kv_heads", f"must divide model.num_heads ({m.num_heads}), "
                                                    f"got {m.num_kv_heads}")
    _validate_family(m)
    if not m.rope_theta > 0:  # also rejects nan
        raise ConfigError("model.rope_theta", f"must be > 0, got {m.rope_theta}")
    if not 0 < m.rotary_pct <= 1:
        raise ConfigError("model.rotary_pct", f"must be in (0, 1], got {m.rotary_pct}")


def validate_recipe(r: RecipeConfig) -> None:
    _positive("model.recipe.steps", r.steps)
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
    _one_of("model.recipe.precision", r.precision, RECIPE_PRECISIONS)


def validate_hardware(hw: HardwareConfig) -> None:
    _one_of("hardware.gpu", hw.gpu, tuple(sorted(gpus.CATALOGUE)))
    _positive("hardware.gpus_per_node", hw.gpus_per_node)
    _positive("hardware.nodes", hw.nodes)


def validate_strategy(st: StrategyConfig, world: int) -> None:
    _one_of("strategy.backend", st.backend, BACKENDS)
    if st.backend == "deepspeed":
        _one_of("strategy.zero_stage", st.zero_stage, (1, 2, 3))
    elif st.zero_stage:
        raise ConfigError("strategy.zero_stage", f"only the deepspeed backend has ZeRO stages; got backend "
                                                 f"{st.backend!r} with zero_stage={st.zero_stage}")
    if (st.offload_optimizer or st.offload_params) and st.backend != "deepspeed":
        raise ConfigError("strategy.offload_optimizer", "CPU offload is implemented for the deepspeed backend only")
    if st.offload_params and st.zero_stage != 3:
        raise ConfigError("strategy.offload_params", "parameter offload needs strategy.zero_stage=3")
    offloads = st.offload_optimizer or st.offload_params
    if world == 1 and st.backend in ("ddp", "fsdp", "deepspeed") and not offloads:
        raise ConfigError("strategy", f"{strategy_label(st)} on 1 device has nothing to distribute or shard; "
                                      f"use strategy=single (or an -offload strategy to save memory)")
    if world > 1 and st.backend == "single":
        raise ConfigError("strategy", f"strategy=single runs one process, but the hardware has {world} devices; "
                                      f"allowed: ddp, fsdp, fsdp-grad-op, zero1, zero2, zero3 and -offload variants")


def validate_tricks(cfg: BenchConfig) -> None:
    """Precision and attention, then the faster methods (checkpointing, SDPA kernel, compile mode, FP8)."""
    tr, hw, st = cfg.tricks, cfg.hardware, cfg.strategy
    _one_of("tricks.precision", tr.precision, TRICK_PRECISIONS)
    _one_of("tricks.attention", tr.attention, ATTENTIONS)
    spec = gpus.gpu(hw.gpu)
    if cfg.precision == "bf16" and spec.arch not in ("cpu",) and not spec.supports_bf16:
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
    _validate_fast_methods(cfg)


def validate_run(cfg: BenchConfig) -> None:
    """Data, timing, target, and the run's own keys: steps, time-outs, and a micro-batch that splits the batch."""
    m = cfg.model
    _one_of("data.source", cfg.data.source, DATA_SOURCES)
    _one_of("timing", cfg.timing, TIMINGS)
    validate_target(cfg)
    _positive("peers.repeats", cfg.peers.repeats)
    _one_of("multinode", cfg.multinode, MULTINODE)
    _one_of("logger", cfg.logger, LOGGERS)
    _positive("collective_timeout_s", cfg.collective_timeout_s)
    _positive("micro_batch", cfg.micro_batch)
    _positive("steps", cfg.steps, MIN_TIMED_STEPS)
    _positive("warmup_steps", cfg.warmup_steps, 0)
    _positive("search_repeats", cfg.search_repeats, 0)
    _positive("timeout_s", cfg.timeout_s)
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
        _positive(f"model.{key}", getattr(m, key))
    _positive("model.num_classes", m.num_classes, 2)
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
        _positive(f"target.{key}", getattr(t, key))
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


def _validate_fast_methods(cfg: BenchConfig) -> None:
    """The faster-method tricks: selective checkpointing and fused CE, SDPA kernel choice, compile mode, FP8."""
    tr = cfg.tricks
    _positive("tricks.ac_every", tr.ac_every)
    if tr.fused_linear_ce and cfg.model.family not in CAUSAL_LM_FAMILIES:
        raise ConfigError("tricks.fused_linear_ce", f"fuses a causal LM's output head with its loss; model.family "
                                                    f"{cfg.model.family!r} has none; allowed families: "
                                                    f"{', '.join(CAUSAL_LM_FAMILIES)}")
    if tr.ac_every > 1 and not tr.activation_checkpointing:
        raise ConfigError("tricks.ac_every", f"checkpoints every k-th block of activation checkpointing; set "
                                             f"tricks.activation_checkpointing=true, or leave ac_every=1 "
                                             f"(got {tr.ac_every})")
    if tr.ac_every > cfg.model.num_layers:
        raise ConfigError("tricks.ac_every", f"must be ≤ model.num_layers ({cfg.model.num_layers}), got {tr.ac_every}")
    _one_of("tricks.attention_backend", tr.attention_backend, ATTENTION_BACKENDS)
    if tr.attention_backend != "auto":
        _validate_attention_backend(cfg)
    _one_of("tricks.compile_mode", tr.compile_mode, COMPILE_MODES)
    if tr.compile_mode != "default":
        _validate_compile_mode(cfg)
    if tr.fp8:
        _validate_fp8(cfg)


def _validate_attention_backend(cfg: BenchConfig) -> None:
    tr, on_cpu, spec = cfg.tricks, cfg.hardware.gpu == "cpu", gpus.gpu(cfg.hardware.gpu)
    if tr.attention != "sdpa":
        raise ConfigError("tricks.attention_backend", f"chooses the kernel of attention=sdpa, but attention is "
                                                      f"{tr.attention!r}; allowed here: auto")
    if on_cpu and tr.attention_backend in GPU_ATTENTION_BACKENDS:
        raise ConfigError("tricks.attention_backend", f"{tr.attention_backend} is a CUDA kernel; allowed on "
                                                      f"CPU: auto, math")
    if tr.attention_backend in ("flash", "cudnn"):
        if not on_cpu and not spec.supports_bf16:
            raise ConfigError("tricks.attention_backend", f"{tr.attention_backend} needs an Ampere or newer GPU; "
                                                          f"allowed on {spec.name}: auto, efficient, math")
        if cfg.precision == "fp32":
            raise ConfigError("tricks.attention_backend", f"the {tr.attention_backend} kernel runs in bf16/fp16 "
                                                          f"only, and the precision is fp32; allowed: auto, "
                                                          f"efficient, math (or tricks.precision=bf16)")
    head_dim = cfg.model.hidden_size // cfg.model.num_heads
    attends = cfg.model.family not in ATTENTION_FREE_FAMILIES  # no SDPA call to check
    if attends and tr.attention_backend == "flash" and (head_dim % 8 or head_dim > 256):
        # torch's flash SDPA kernel: head dimension a multiple of 8 and at most 256 (sdp_utils check_head_dim_size)
        raise ConfigError("tricks.attention_backend", f"the flash kernel needs a head dimension that is a multiple "
                                                      f"of 8 and ≤ 256; model.hidden_size / model.num_heads is "
                                                      f"{head_dim}; allowed: auto, efficient, math")
    kv_heads = cfg.model.num_kv_heads or cfg.model.num_heads
    if attends and tr.attention_backend in ("efficient", "cudnn") and kv_heads < cfg.model.num_heads:
        # transformers' sdpa_attention_forward passes enable_gqa=True on CUDA when there is no mask (training
        # without padding: use_gqa_in_sdpa), and torch documents GQA for the flash and math kernels only
        # (scaled_dot_product_attention's docstring), so the only kernel enabled would find no kernel to run.
        raise ConfigError("tricks.attention_backend", f"grouped-query attention (model.num_kv_heads={kv_heads} < "
                                                      f"model.num_heads={cfg.model.num_heads}) runs on the flash "
                                                      f"and math SDPA kernels only, not "
                                                      f"{tr.attention_backend}; allowed: auto, flash, math")


def _validate_compile_mode(cfg: BenchConfig) -> None:
    tr, on_cpu = cfg.tricks, cfg.hardware.gpu == "cpu"
    if not tr.compile:
        raise ConfigError("tricks.compile_mode", f"{tr.compile_mode!r} is a torch.compile mode, and "
                                                 f"tricks.compile is false; set tricks.compile=true")
    if on_cpu and tr.compile_mode in CUDA_GRAPH_COMPILE_MODES:
        raise ConfigError("tricks.compile_mode", f"{tr.compile_mode} captures CUDA graphs, which exist on GPUs "
                                                 f"only; allowed on CPU: default, max-autotune-no-cudagraphs")
    sharded = cfg.strategy.backend == "fsdp" or (cfg.strategy.backend == "deepspeed" and
                                                 cfg.strategy.zero_stage == 3)
    if tr.compile_mode in CUDA_GRAPH_COMPILE_MODES and sharded:
        # A CUDA graph replays fixed memory addresses; FSDP2 and ZeRO-3 free each block's gathered parameters
        # after use and gather them into new storage on the next forward (FSDP2 also allocates pinned host memory
        # in chunk_cat, unsafe during capture): pytorch/pytorch#127225, #164264. Such graphs are re-recorded or
        # skipped, so the label would claim CUDA graphs that did not run, or the run fails.
        raise ConfigError("tricks.compile_mode", f"{tr.compile_mode} captures CUDA graphs, which do not work with "
                                                 f"parameters gathered on the fly ({strategy_label(cfg.strategy)}"
                                                 f"); allowed: default, max-autotune-no-cudagraphs")
    if tr.compile_mode in CUDA_GRAPH_COMPILE_MODES and cfg.grad_accum > 1:
        # A replayed graph writes its outputs into the same pool addresses each time; with several backward passes
        # per optimizer step, gradients accumulated from one replay can be overwritten by the next (torch warns of
        # outputs "overwritten by a subsequent run"). Until a GPU test shows gradients equal to eager, refuse it.
        raise ConfigError("tricks.compile_mode", f"{tr.compile_mode} captures CUDA graphs, whose replays may "
                                                 f"overwrite the previous micro-batch's gradients under gradient "
                                                 f"accumulation ({cfg.grad_accum} micro-batches per step); allowed: "
                                                 f"default, max-autotune-no-cudagraphs, or micro_batch = "
                                                 f"{cfg.model.global_batch // cfg.world_size} (accumulation 1)")


def _validate_fp8(cfg: BenchConfig) -> None:
    tr, on_cpu, spec = cfg.tricks, cfg.hardware.gpu == "cpu", gpus.gpu(cfg.hardware.gpu)
    if "fp8" not in spec.peak_flops:
        raise ConfigError("tricks.fp8", f"FP8 training needs FP8 tensor cores (Hopper, or Ada); {spec.name} "
                                        f"has none{' (CPU)' if on_cpu else ''}; allowed: false")
    if cfg.strategy.backend == "deepspeed":
        raise ConfigError("tricks.fp8", "torchao float8 training is wired for single, ddp and fsdp only; "
                                        "allowed with deepspeed: false")
    if cfg.model.family in FP8_UNSUPPORTED_FAMILIES:
        raise ConfigError("tricks.fp8", f"torchao float8 swaps nn.Linear layers, and model.family "
                                        f"{cfg.model.family!r} has none outside its output head (transformers "
                                        f"builds GPT-2's projections as Conv1D): nothing would run in float8; "
                                        f"allowed: false")
    if not tr.compile:
        raise ConfigError("tricks.fp8", "torchao float8 needs torch.compile to fuse its scaling casts (eager "
                                        "fp8 is slower than bf16); set tricks.compile=true")
    positions = cfg.model.linear_positions
    if any(cfg.micro_batch * n % 16 for n in positions):
        # Float8 weight gradients multiply over micro_batch × positions rows, and torch._scaled_mm needs that
        # inner dimension divisible by 16 (torchao pads it only with pad_inner_dim, which costs a copy).
        step = math.lcm(*(16 // math.gcd(n, 16) for n in positions))
        raise ConfigError("micro_batch", f"torchao float8 needs micro_batch × positions divisible by 16 in every "
                                         f"Linear; {cfg.model.name} has {', '.join(map(str, positions))} "
                                         f"positions per sample, so micro_batch={cfg.micro_batch} does not fit; "
                                         f"allowed: multiples of {step}")
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError("tricks.fp8", "FP8 training needs the `torchao` package, which is not installed "
                                        "(the optional extra: pip install -e '.[fp8]'); allowed: false")
