"""Validation of the faster-method tricks: selective checkpointing and fused CE, the SDPA kernel, the compile mode
and FP8. Each rule names the key and what is allowed, and the comments name the library behaviour behind it."""

from __future__ import annotations

import importlib.util
import math

from pretrain_bench.config.checks import one_of, positive
from pretrain_bench.config.labels import strategy_label
from pretrain_bench.config.schema import (
    ATTENTION_BACKENDS,
    COMPILE_MODES,
    CUDA_GRAPH_COMPILE_MODES,
    FP8_UNSUPPORTED_FAMILIES,
    GPU_ATTENTION_BACKENDS,
    BenchConfig,
    ConfigError,
)
from pretrain_bench.spec import gpus
from pretrain_bench.spec.models import ATTENTION_FREE_FAMILIES, CAUSAL_LM_FAMILIES


def validate_fast_methods(cfg: BenchConfig) -> None:
    """The faster-method tricks: selective checkpointing and fused CE, SDPA kernel choice, compile mode, FP8."""
    tr = cfg.tricks
    positive("tricks.ac_every", tr.ac_every)
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
    one_of("tricks.attention_backend", tr.attention_backend, ATTENTION_BACKENDS)
    if tr.attention_backend != "auto":
        _validate_attention_backend(cfg)
    one_of("tricks.compile_mode", tr.compile_mode, COMPILE_MODES)
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
