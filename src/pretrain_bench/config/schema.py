"""Typed schema of every config group: dataclasses that Hydra's ConfigStore checks while it merges the YAML files.

Typos and wrong types fail during composition (`compose.py`); what types cannot express (sizes, divisibility,
combinations that cannot run) is checked by `validate.py`. Every failure is a `ConfigError` naming the key and the
allowed values. No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pretrain_bench.spec.models import VISION_FAMILIES

# OmegaConf's marker of a required value (`omegaconf.MISSING`), spelled out: importing omegaconf costs every worker
# rank ~0.5 s, and ranks only read configs that are already complete.
MISSING = "???"

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
    gpu: str = MISSING  # key of spec.gpus.CATALOGUE
    gpus_per_node: int = 1  # worker processes per node (on `cpu`, CPU processes)
    nodes: int = 1
    price_per_hour: float | None = None  # overrides the catalogue's cloud price (USD per GPU-hour)
    purchase_price: float | None = None  # overrides the catalogue's purchase price (USD per GPU)
    peak_tflops: float | None = None  # dense peak of the compute dtype, overriding the catalogue's (gpu=unknown: MFU)
    memory_gib: float | None = None  # a CPU process's memory budget in GiB (an OOM past it); None: unlimited

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
    # Faster methods; their numerical effect is stated in docs/methodology.md.
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
    timeout_s: int | None = None  # None: fitted to the cell's expected step time (bench/runner.py)
    timing: str = "honest"  # honest | legacy (the reference harness's method, for comparison; never ranked)
    collective_timeout_s: int = 600  # a collective that waits longer than this fails the cell (a hung rank)
    multinode: str = "srun"  # how nodes > 1 start: srun inside a SLURM allocation | local (simulated, for tests)
    env: dict[str, str] = field(default_factory=dict)  # extra worker environment, e.g. NCCL_IB_DISABLE: "1"
    logger: str = "none"  # none | wandb (offline unless WANDB_MODE / a server is configured)
    search_repeats: int = 3  # `search`: alternated re-measurements of each near-best method before ranking (0: none)

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
