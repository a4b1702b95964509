"""Typed schema of every config group, Hydra composition, and validation that fails before any process starts.

The schema (dataclasses in Hydra's ConfigStore) catches typos and wrong types while Hydra merges the YAML files;
`validate` then checks what types cannot: sizes, divisibility, and combinations that cannot run. Every failure is a
`ConfigError` naming the key and the allowed values. This module never imports torch.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from pretrain_bench import hardware

CONFIG_DIR = Path(os.environ.get("PRETRAIN_BENCH_CONFIGS", Path(__file__).resolve().parents[2] / "configs"))

FAMILIES = ("gpt_neox", "gpt2", "llama", "roberta", "mamba", "vit", "convnext")
VISION_FAMILIES = ("vit", "convnext")  # trained on images: throughput and FLOPs per image
CAUSAL_LM_FAMILIES = ("gpt_neox", "gpt2", "llama", "mamba")  # next-token loss: real text, targets, fused CE, peers
ATTENTION_FREE_FAMILIES = ("mamba", "convnext")  # no attention layer: no kernel to choose
BACKENDS = ("single", "ddp", "fsdp", "deepspeed")
RECIPE_PRECISIONS = ("fp32", "bf16", "fp16")
TRICK_PRECISIONS = ("recipe", *RECIPE_PRECISIONS)
ATTENTIONS = ("eager", "sdpa", "flash_attention_2")
DATA_SOURCES = ("synthetic", "stdlib", "python", "files", "hub")
TIMINGS = ("honest", "legacy")
MULTINODE = ("srun", "local")
LOGGERS = ("none", "wandb")
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")  # SDPA kernels (tricks.attention_backend)
GPU_ATTENTION_BACKENDS = ("flash", "cudnn", "efficient")
COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
CUDA_GRAPH_COMPILE_MODES = ("max-autotune", "reduce-overhead")  # these capture CUDA graphs: GPU only
FP8_UNSUPPORTED_FAMILIES = ("gpt2",)  # no nn.Linear for torchao float8 to swap (transformers' GPT-2 uses Conv1D)
MIN_TIMED_STEPS = 5  # median and spread need at least this many timed optimizer steps


class ConfigError(ValueError):
    """A config that cannot run. The message names the key and what is allowed."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"invalid config `{key}`: {problem}")


@dataclass
class RecipeConfig:
    """The published training recipe: the *what* of training, never changed by tricks or strategies."""

    steps: int = 143_000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    warmup_ratio: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "fp16"
    source: str = ""


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = "gpt_neox"
    hidden_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int | None = None  # llama: key/value heads (fewer than num_heads: grouped-query); None: num_heads
    intermediate_size: int | None = None  # None: 4 × hidden_size
    vocab_size: int = 50304
    seq_len: int = 2048
    rotary_pct: float = 0.25
    rope_theta: float = 10000.0  # RoPE base frequency (gpt_neox, llama)
    parallel_residual: bool = True
    tie_embeddings: bool = False
    global_batch: int = 1024  # sequences (images for vision models) per optimizer step
    mask_prob: float = 0.15  # roberta: share of each sequence's tokens masked for the MLM loss
    state_size: int = 16  # mamba: SSM state per channel (N)
    expand: int = 2  # mamba: inner width ÷ hidden_size
    conv_kernel: int = 4  # mamba: causal convolution width
    image_size: int = 224  # vit, convnext: square input side in pixels
    patch_size: int = 16  # vit: square patch side in pixels
    num_channels: int = 3  # vit, convnext
    num_classes: int = 1000  # vit, convnext: classifier outputs
    depths: list[int] = field(default_factory=list)  # convnext: blocks per stage
    widths: list[int] = field(default_factory=list)  # convnext: channels per stage (hidden_size is the last)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def is_vision(self) -> bool:
        return self.family in VISION_FAMILIES

    @property
    def tokens_per_sample(self) -> int:
        """Throughput units per sample: tokens of a sequence, or 1 for an image (vision rates are images/s)."""
        return 1 if self.is_vision else self.seq_len

    @property
    def linear_positions(self) -> tuple[int, ...]:
        """Positions per sample that the blocks' Linear layers see (their inputs' rows per sample): tokens; ViT's
        patches plus the class token; each ConvNeXt stage's pixels (stem stride 4, then halved per stage)."""
        if self.family == "vit":
            return ((self.image_size // self.patch_size) ** 2 + 1,)
        if self.family == "convnext":
            return tuple((self.image_size // 4 // 2**i) ** 2 for i in range(len(self.depths)))
        return (self.seq_len,)

    @property
    def unit(self) -> str:
        return "image" if self.is_vision else "token"


@dataclass
class HardwareConfig:
    name: str = MISSING
    gpu: str = MISSING  # key of hardware.CATALOGUE
    gpus_per_node: int = 1  # worker processes per node (on `cpu`, CPU processes)
    nodes: int = 1
    price_per_hour: float | None = None  # overrides the catalogue's cloud price (USD per GPU-hour)
    purchase_price: float | None = None  # overrides the catalogue's purchase price (USD per GPU)

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass
class StrategyConfig:
    backend: str = MISSING  # single | ddp | fsdp | deepspeed
    reshard_after_forward: bool = True  # fsdp: False keeps parameters gathered between forward and backward
    zero_stage: int = 0  # deepspeed: 1, 2 or 3
    offload_optimizer: bool = False  # deepspeed: optimizer state and step on the CPU
    offload_params: bool = False  # deepspeed ZeRO-3: parameters on the CPU


@dataclass
class TricksConfig:
    """Speed-only settings (the *how*). Only `precision` changes the math, and records say so."""

    precision: str = "fp32"  # recipe | fp32 | bf16 | fp16
    tf32: bool = False
    attention: str = "eager"  # eager | sdpa | flash_attention_2
    fused_adamw: bool = False
    compile: bool = False
    activation_checkpointing: bool = False
    # Faster methods (issue 6); their numerical effect is stated in docs/methodology.md.
    ac_every: int = 1  # with activation_checkpointing: checkpoint blocks 0, k, 2k, … (1: every block)
    fused_linear_ce: bool = False  # output head + cross-entropy in chunks: the full logits never exist
    attention_backend: str = "auto"  # SDPA kernel with attention=sdpa: auto | flash | cudnn | efficient | math
    compile_mode: str = "default"  # torch.compile mode: default | max-autotune | max-autotune-no-cudagraphs | …
    fp8: bool = False  # torchao float8 training of the Linear layers (GPUs with FP8 tensor cores)


@dataclass
class DataConfig:
    """Where training tokens come from. `synthetic` (the default) is for throughput; the others are real text."""

    source: str = "synthetic"  # synthetic | stdlib | python (stdlib + installed packages) | files | hub
    paths: list[str] = field(default_factory=list)  # files or directories of .txt, .py, .jsonl/.json, .parquet
    text_field: str = "text"  # the text column of JSONL / Parquet records
    hub_name: str | None = None  # a `datasets` hub name (source=hub; needs a network, never required)
    tokenizer: str = "train"  # "train": byte-level BPE trained locally and cached; else a local tokenizer directory
    tokenizer_vocab: int = 8192  # vocabulary of a locally trained tokenizer
    val_tokens: int = 262_144  # held-out validation tokens (whole documents, never seen in training)
    max_tokens: int | None = None  # cap on tokenized training tokens (None: the whole corpus)
    cache_dir: str = "~/.cache/pretrain-bench"  # tokenizers and memory-mapped token shards


@dataclass
class TargetConfig:
    """Time-to-target-loss runs (`pretrain-bench target`), with MLPerf-style clock rules (docs/methodology.md)."""

    loss: float | None = None  # stop at the first evaluation with validation loss ≤ this
    eval_every: int = 50  # optimizer steps between evaluations
    eval_sequences: int = 64  # validation sequences per evaluation (the same ones every time)
    max_steps: int = 2000  # step budget: a run that has not reached the target by then is `not_reached`
    seeds: int = 1  # repeats with seeds seed, seed+1, …


@dataclass
class PeersConfig:
    """`pretrain-bench peers`: the HF Trainer against our best method, alternating (docs/methodology.md)."""

    repeats: int = 2  # HF, ours, HF, ours, …: this many measurements of each side


@dataclass
class BenchConfig:
    model: ModelConfig = MISSING
    hardware: HardwareConfig = MISSING
    strategy: StrategyConfig = MISSING
    tricks: TricksConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    micro_batch: int = 1
    steps: int = 10  # timed optimizer steps
    warmup_steps: int = 3  # untimed optimizer steps before them (compile, allocator, fp16 loss scale)
    seed: int = 0
    store: str = "bench-results"
    timeout_s: int = 1800
    timing: str = "honest"  # honest | legacy (the reference harness's method, for comparison; never ranked)
    collective_timeout_s: int = 600  # a collective that waits longer than this fails the cell (a hung rank)
    multinode: str = "srun"  # how nodes > 1 start: srun inside a SLURM allocation | local (simulated, for tests)
    env: dict[str, str] = field(default_factory=dict)  # extra worker environment, e.g. NCCL_IB_DISABLE: "1"
    logger: str = "none"  # none | wandb (offline unless WANDB_MODE / a server is configured)

    @property
    def world_size(self) -> int:
        return self.hardware.world_size

    @property
    def grad_accum(self) -> int:
        return self.model.global_batch // (self.world_size * self.micro_batch)

    @property
    def precision(self) -> str:
        """The compute precision actually used: the trick's, or the recipe's when the trick says `recipe`."""
        p = self.tricks.precision
        return self.model.recipe.precision if p == "recipe" else p


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="bench_schema", node=BenchConfig)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> BenchConfig:
    """Compose `configs/bench.yaml` with Hydra overrides into a validated BenchConfig (no output folders)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_schema()
    for o in overrides:
        if o.startswith("+") and not o.lstrip("+").startswith("env."):
            key = o.lstrip("+").split("=", 1)[0] or "overrides"
            raise ConfigError(key, f"'+' adds a key, and the schema is closed: only worker environment variables "
                                   f"can be added (+env.NAME=value). Allowed keys: {', '.join(_schema_keys(''))}")
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a sweep job) on the same config dir
            node = hydra_compose(config_name="bench", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                node = hydra_compose(config_name="bench", overrides=list(overrides))
        cfg = OmegaConf.to_object(node)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_key_of(e), _hydra_message(e)) from None
    except ValueError as e:  # Hydra's own ValueErrors, e.g. a group given a number instead of a config name
        raise ConfigError("overrides", f"{e}; a config group takes a config name, e.g. model=pythia-160m") from None
    validate(cfg)
    return cfg


def _key_of(e: Exception) -> str:
    text = str(e)
    for pattern in (r"Could not find '([\w-]+)/", r"override '([\w.]+)'", r"override ([\w.]+)=", r"Key '(\w+)'"):
        if found := re.search(pattern, text):
            return found.group(1)
    return str(getattr(e, "full_key", "") or "overrides")


def _hydra_message(e: Exception) -> str:
    """Hydra's own words (which already list a group's options), without search paths and object dumps."""
    parts = [str(e)] + ([str(e.__cause__)] if e.__cause__ else [])
    text = " ".join(p.split("Config search path")[0].split("full_key:")[0] for p in parts)
    message = re.sub(r"To append to your config use \S+ ", "", " ".join(text.split()))
    if found := re.search(r"override '([\w.]+)'", message):
        parent = found.group(1).rsplit(".", 1)[0] if "." in found.group(1) else ""
        message += f" Allowed keys{' under ' + parent if parent else ''}: {', '.join(_schema_keys(parent))}."
    return message


def _schema_keys(path: str) -> list[str]:
    nodes = {"": BenchConfig, "model": ModelConfig, "model.recipe": RecipeConfig, "hardware": HardwareConfig,
             "strategy": StrategyConfig, "tricks": TricksConfig, "data": DataConfig,
             "target": TargetConfig, "peers": PeersConfig}
    return [f.name for f in fields(nodes[path])] if path in nodes else []


def options(group: str) -> list[str]:
    """The config names available in a group (e.g. every model), from the YAML files."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _positive(key: str, value: int | float, minimum: int | float = 1) -> None:
    if value < minimum:
        raise ConfigError(key, f"must be ≥ {minimum}, got {value}")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")


def validate(cfg: BenchConfig) -> None:
    """Reject configs that cannot run, before any worker process or GPU time is spent."""
    m, r, hw, st, tr = cfg.model, cfg.model.recipe, cfg.hardware, cfg.strategy, cfg.tricks
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

    _one_of("hardware.gpu", hw.gpu, tuple(sorted(hardware.CATALOGUE)))
    _positive("hardware.gpus_per_node", hw.gpus_per_node)
    _positive("hardware.nodes", hw.nodes)

    _one_of("strategy.backend", st.backend, BACKENDS)
    _validate_strategy(st, cfg.world_size)

    _one_of("tricks.precision", tr.precision, TRICK_PRECISIONS)
    _one_of("tricks.attention", tr.attention, ATTENTIONS)
    spec = hardware.gpu(hw.gpu)
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

    _one_of("data.source", cfg.data.source, DATA_SOURCES)
    _one_of("timing", cfg.timing, TIMINGS)
    _validate_target(cfg)
    _positive("peers.repeats", cfg.peers.repeats)
    _one_of("multinode", cfg.multinode, MULTINODE)
    _one_of("logger", cfg.logger, LOGGERS)
    _positive("collective_timeout_s", cfg.collective_timeout_s)
    _positive("micro_batch", cfg.micro_batch)
    _positive("steps", cfg.steps, MIN_TIMED_STEPS)
    _positive("warmup_steps", cfg.warmup_steps, 0)
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


def _validate_target(cfg: BenchConfig) -> None:
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
    """The faster-method tricks: selective checkpointing, SDPA kernel choice, compile mode, FP8."""
    tr, on_cpu, spec = cfg.tricks, cfg.hardware.gpu == "cpu", hardware.gpu(cfg.hardware.gpu)
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
    _one_of("tricks.compile_mode", tr.compile_mode, COMPILE_MODES)
    if tr.compile_mode != "default":
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
    if tr.fp8:
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


def _validate_strategy(st: StrategyConfig, world: int) -> None:
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


def strategy_label(st: StrategyConfig) -> str:
    """Canonical strategy name, derived from the fields so that overrides cannot leave a stale name."""
    if st.backend == "fsdp":
        return "fsdp" if st.reshard_after_forward else "fsdp-grad-op"
    if st.backend == "deepspeed":
        label = f"zero{st.zero_stage}"
        if st.offload_optimizer and st.offload_params:
            return label + "-offload"
        if st.offload_optimizer:
            return label + ("-offload-opt" if st.zero_stage == 3 else "-offload")
        return label + ("-offload-params" if st.offload_params else "")
    return st.backend


NAIVE = TricksConfig()
FREE_LUNCH = TricksConfig(precision="recipe", tf32=True, attention="sdpa", fused_adamw=True, compile=True)


def tricks_label(tr: TricksConfig) -> str:
    """Canonical trick-set name: `naive`, `free-lunch` or the list of what is on, then the faster methods, then `+ac`.

    E.g. `free-lunch+flce+ac/2` (fused linear-CE, every 2nd block checkpointed), `bf16+sdpa+compile+sdpa-flash`.
    """
    core = replace(tr, activation_checkpointing=False, ac_every=1, fused_linear_ce=False, attention_backend="auto",
                   compile_mode="default", fp8=False)
    if core == NAIVE:
        label = "naive"
    elif core == FREE_LUNCH:
        label = "free-lunch"
    else:
        parts = [tr.precision] if tr.precision != "fp32" else []
        parts += [tr.attention] if tr.attention != "eager" else []
        parts += [name for name, on in (("tf32", tr.tf32), ("fused-adamw", tr.fused_adamw), ("compile", tr.compile))
                  if on]
        label = "+".join(parts) or "naive"
    extras = [f"compile-{tr.compile_mode}"] if tr.compile_mode != "default" else []
    extras += [f"sdpa-{tr.attention_backend}"] if tr.attention_backend != "auto" else []
    extras += ["fp8"] if tr.fp8 else []
    extras += ["flce"] if tr.fused_linear_ce else []
    if tr.activation_checkpointing:
        extras.append("ac" if tr.ac_every == 1 else f"ac/{tr.ac_every}")
    return "+".join([label, *extras])


def to_dict(cfg: BenchConfig) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (what workers receive and records keep)."""
    return asdict(cfg)


def from_dict(data: dict[str, Any]) -> BenchConfig:
    m = dict(data["model"])
    m["recipe"] = RecipeConfig(**m["recipe"])
    groups = {"model": ModelConfig(**m), "hardware": HardwareConfig(**data["hardware"]),
              "strategy": StrategyConfig(**data["strategy"]), "tricks": TricksConfig(**data["tricks"]),
              "data": DataConfig(**data["data"]), "target": TargetConfig(**data["target"]),
              "peers": PeersConfig(**data.get("peers", {}))}  # records written before `peers` existed lack it
    return BenchConfig(**groups, **{k: v for k, v in data.items() if k not in groups})
