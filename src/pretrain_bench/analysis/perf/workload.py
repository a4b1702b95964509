"""What runs: a model shape on a GPU layout with a strategy, tricks and a micro-batch, as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pretrain_bench.config import BenchConfig, ConfigError, ModelConfig, strategy_label
from pretrain_bench.spec import gpus, models

STRATEGIES = ("single", "ddp", "fsdp", "fsdp-grad-op", "zero1", "zero2", "zero3", "zero1-offload", "zero2-offload",
              "zero3-offload", "zero3-offload-opt", "zero3-offload-params")
MODELLED_FAMILIES = ("gpt_neox", "gpt2", "llama", "roberta", "vit")  # transformers whose blocks the model knows


@dataclass(frozen=True)
class Workload:
    model: ModelConfig
    gpu: gpus.GPUSpec
    gpus_per_node: int = 1
    nodes: int = 1
    strategy: str = "single"  # a STRATEGIES label (config.strategy_label)
    precision: str = "bf16"  # fp32 | bf16 | fp16 (mixed: fp32 master weights)
    tf32: bool = False
    attention: str = "sdpa"  # eager | sdpa | flash_attention_2
    compile: bool = False
    ac_every: int = 0  # 0: no activation checkpointing; k: checkpoint blocks 0, k, 2k, …
    selective_ac: bool = False  # op-level selective recompute (elementwise ops recomputed, matmul outputs kept)
    fused_ce: bool = False
    fused_adamw: bool = False
    micro_batch: int = 1
    grad_accum: int = 1

    def __post_init__(self):
        if self.model.family not in MODELLED_FAMILIES:
            raise ConfigError("model.family", f"the performance model covers {', '.join(MODELLED_FAMILIES)}; "
                                              f"got {self.model.family!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"{self.strategy!r} is not modelled; allowed: {', '.join(STRATEGIES)}")

    @property
    def world(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def tokens(self) -> int:
        """Positions per sequence (tokens; ViT: patches + the class token)."""
        return self.model.linear_positions[0]

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch * self.tokens

    @property
    def units_per_step(self) -> int:
        """Throughput units (tokens, images) per optimizer step over all GPUs."""
        return self.micro_batch * self.grad_accum * self.world * self.model.tokens_per_sample

    @property
    def device_share(self) -> int:
        """Processes sharing one device's FLOP/s and memory bandwidth: a CPU's processes share its cores."""
        return self.gpus_per_node if self.gpu.arch == "cpu" else 1

    @property
    def act_bytes(self) -> int:
        return 4 if self.precision == "fp32" else 2

    @property
    def peak_dtype(self) -> str:
        return gpus.peak_dtype(self.precision, self.tf32)

    @property
    def params(self) -> int:
        return models.num_params(self.model)

    @property
    def sharded(self) -> bool:
        return self.strategy.startswith(("fsdp", "zero"))

    def with_(self, **changes) -> Workload:
        return replace(self, **changes)


def from_config(cfg: BenchConfig) -> Workload:
    """The workload a composed config runs, with the hardware config's overrides: prices (as `estimate` takes them)
    and a memory budget (what `memory.capacity` then offers)."""
    tr, hw = cfg.tricks, cfg.hardware
    gpu = gpus.gpu(hw.gpu)
    overrides = {k: getattr(hw, k) for k in ("price_per_hour", "purchase_price", "memory_gib")
                 if getattr(hw, k) is not None}
    return Workload(
        model=cfg.model, gpu=replace(gpu, **overrides), gpus_per_node=cfg.hardware.gpus_per_node,
        nodes=cfg.hardware.nodes, strategy=strategy_label(cfg.strategy), precision=cfg.precision, tf32=tr.tf32,
        attention=tr.attention, compile=tr.compile, ac_every=tr.ac_every if tr.activation_checkpointing else 0,
        fused_ce=tr.fused_linear_ce, fused_adamw=tr.fused_adamw, micro_batch=cfg.micro_batch,
        grad_accum=cfg.grad_accum)


@dataclass(frozen=True)
class Gemm:
    """One weight matmul of a block: inputs of width k, outputs of width n."""

    k: int
    n: int


def block_gemms(m: ModelConfig) -> tuple[Gemm, ...]:
    """The weight matmuls of one block: fused QKV, attention output, MLP up (with gate under SwiGLU), MLP down."""
    d, f = m.hidden_size, m.ffn_size
    kv = (m.num_kv_heads or m.num_heads) * (d // m.num_heads)
    up = 2 * f if m.family == "llama" else f
    return Gemm(d, d + 2 * kv), Gemm(d, d), Gemm(d, up), Gemm(f, d)


def head_gemm(m: ModelConfig) -> Gemm | None:
    """The output head: d × vocabulary for language models (ViT's classifier sees one token: negligible)."""
    return None if m.is_vision else Gemm(m.hidden_size, m.vocab_size)
