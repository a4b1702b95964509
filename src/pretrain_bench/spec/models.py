"""Model registry: build a `transformers` model from a shape config (never from the hub) and count its FLOPs.

One `Family` per architecture: how to build it, where its transformer blocks are (the unit that FSDP shards,
activation checkpointing recomputes and torch.compile compiles), and how many parameters take part in matmuls.
The analytic part needs no torch, so estimates and reports can use it on a machine without a GPU stack.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pretrain_bench.spec import hf_configs

if TYPE_CHECKING:  # types only: the schema sits above this module, and torch is never imported here
    from torch import nn

    from pretrain_bench.config.schema import ModelConfig


TASKS = {"causal_lm": "AutoModelForCausalLM", "masked_lm": "AutoModelForMaskedLM",
         "image_classification": "AutoModelForImageClassification"}


@dataclass(frozen=True)
class Family:
    hf_config: Callable[[ModelConfig], object]  # our shape -> a transformers config
    blocks: Callable[[nn.Module], list[nn.Module]]  # the repeated blocks of a built model (FSDP/AC/compile unit)
    block_class: str  # their class name, for exported FSDP wrapping policies (tests check it against `blocks`)
    params: Callable[[ModelConfig], int]  # all parameters
    flops_per_token: Callable[[ModelConfig], float]  # model FLOPs per trained token (per image for vision)
    matmul_params: Callable[[ModelConfig], int] | None = None  # language models: weights that multiply activations
    task: str = "causal_lm"  # a key of TASKS: which transformers head class is built
    attends: bool = True  # has attention layers (False: no SDPA kernel to choose, no attn_implementation)


def _kv_dim(m: ModelConfig) -> int:
    """Width of the K and V projections: all heads' width, or fewer heads' under grouped-query attention."""
    return (m.num_kv_heads or m.num_heads) * (m.hidden_size // m.num_heads)


def _layer_matmul_params(m: ModelConfig, mlp_matrices: int) -> int:
    """Q and output projections (d² each), K and V (d × kv width each) and the MLP's d×f matrices."""
    d = m.hidden_size
    return 2 * d * d + 2 * d * _kv_dim(m) + mlp_matrices * d * m.ffn_size


def _matmul_params(m: ModelConfig, mlp_matrices: int) -> int:
    # + the output head, a d×V matmul even when its weight is tied to the (lookup) input embedding
    return m.num_layers * _layer_matmul_params(m, mlp_matrices) + m.hidden_size * m.vocab_size


def _embedding_params(m: ModelConfig) -> int:
    """Input embedding and output head: one V×d matrix when tied (counted once), two otherwise."""
    return m.vocab_size * m.hidden_size * (1 if m.tie_embeddings else 2)


def _gpt_matmul_params(m: ModelConfig) -> int:
    return _matmul_params(m, mlp_matrices=2)  # GELU MLP: up and down


def _gpt_params(m: ModelConfig) -> int:
    """GPT-NeoX and GPT-2 blocks hold the same tensors: biased QKV/output/MLP matrices and two LayerNorms."""
    d, f = m.hidden_size, m.ffn_size
    biases_and_norms = 4 * d + (f + d) + 4 * d  # QKV and output biases, MLP biases, two LayerNorms (gain, bias)
    return m.num_layers * (_layer_matmul_params(m, 2) + biases_and_norms) + _embedding_params(m) + 2 * d  # final LN


def _gpt2_params(m: ModelConfig) -> int:
    return _gpt_params(m) + m.seq_len * m.hidden_size  # + learned absolute position embeddings


def _llama_matmul_params(m: ModelConfig) -> int:
    return _matmul_params(m, mlp_matrices=3)  # SwiGLU MLP: gate, up and down


def _llama_params(m: ModelConfig) -> int:
    d = m.hidden_size
    # No biases; two RMSNorm gains per block and a final one.
    return m.num_layers * (_layer_matmul_params(m, 3) + 2 * d) + _embedding_params(m) + d


def _lm_flops(matmul_params: Callable[[ModelConfig], int]) -> Callable[[ModelConfig], float]:
    """6·N_matmul + 12·L·d·T per token: see `flops_per_token`."""
    return lambda m: 6.0 * matmul_params(m) + 12.0 * m.num_layers * m.hidden_size * m.seq_len


# ---- RoBERTa: a post-LayerNorm encoder trained as a masked language model ------------------------------------------


def _roberta_matmul_params(m: ModelConfig) -> int:
    # + the MLM head's d×d transform; its decoder is the d×V matmul that _matmul_params counts
    return _matmul_params(m, mlp_matrices=2) + m.hidden_size ** 2


def _roberta_params(m: ModelConfig) -> int:
    d, f, v = m.hidden_size, m.ffn_size, m.vocab_size
    embeddings = v * d + (m.seq_len + 2) * d + d + 2 * d  # words (tied to the decoder), positions, one type, LN
    layer = _layer_matmul_params(m, 2) + 4 * d + f + d + 4 * d  # + QKV/output biases, MLP biases, two LNs
    head = d * d + d + 2 * d + v  # dense, LN, decoder bias
    return embeddings + m.num_layers * layer + head


# ---- Mamba: selective state-space blocks, no attention -------------------------------------------------------------


def _mamba_matmul_params(m: ModelConfig) -> int:
    """Per block: in-projection d×2E, the causal depthwise convolution (E·K taps), x-projection E×(R+2N),
    time-step projection R×E, out-projection E×d, and the scan's read-out y = C·h (E·N per token, a contraction as
    the fused kernel computes it); + the d×V output head. The scan's elementwise recurrence (discretisation, state
    update) is not counted, as softmax and norms are not for transformers."""
    e, n, r = hf_configs.mamba_dims(m)
    d = m.hidden_size
    block = 2 * d * e + e * m.conv_kernel + e * (r + 2 * n) + r * e + e * d + e * n
    return m.num_layers * block + d * m.vocab_size


def _mamba_params(m: ModelConfig) -> int:
    e, n, r = hf_configs.mamba_dims(m)
    d = m.hidden_size
    block = (d + 2 * d * e + (e * m.conv_kernel + e) + e * (r + 2 * n) + (r * e + e) + e * n + e + e * d)
    return m.num_layers * block + _embedding_params(m) + d  # + RMSNorm gains, final RMSNorm


# ---- Vision: FLOPs per image -----------------------------------------------------------------------------------------

def _patches(m: ModelConfig) -> int:
    return (m.image_size // m.patch_size) ** 2


def _vit_params(m: ModelConfig) -> int:
    d, f, p = m.hidden_size, m.ffn_size, m.patch_size
    embeddings = d + (_patches(m) + 1) * d + m.num_channels * p * p * d + d  # [CLS], positions, patch conv
    layer = _layer_matmul_params(m, 2) + 4 * d + f + d + 4 * d
    return embeddings + m.num_layers * layer + 2 * d + d * m.num_classes + m.num_classes  # final LN, classifier


def _vit_flops(m: ModelConfig) -> float:
    """Per image, over T = patches + 1 ([CLS]) tokens: 6·(T·L·layer matmuls + d·classes for the [CLS] token) +
    12·L·d·T² attention + 4·(patch-embedding matmul): the first layer's input (pixels) needs no gradient, so its
    backward is the weight gradient alone."""
    d, tokens = m.hidden_size, _patches(m) + 1
    patch_embed = _patches(m) * m.num_channels * m.patch_size ** 2 * d
    return (4.0 * patch_embed + 6.0 * (tokens * m.num_layers * _layer_matmul_params(m, 2) + d * m.num_classes)
            + 12.0 * m.num_layers * d * tokens ** 2)


def _convnext_stage_sizes(m: ModelConfig) -> list[int]:
    """Feature-map side of each stage: the 4×4 stem, then a 2×2 down-sampling before every later stage."""
    return [m.image_size // 4 // 2 ** i for i in range(len(m.depths))]


def _convnext_params(m: ModelConfig) -> int:
    c = m.widths
    stem = m.num_channels * 16 * c[0] + c[0] + 2 * c[0]  # 4×4 convolution and its LayerNorm
    down = sum(2 * c[i - 1] + 4 * c[i - 1] * c[i] + c[i] for i in range(1, len(c)))  # LN + 2×2 convolution
    # block: 7×7 depthwise conv, LN, C→4C and 4C→C linears, layer scale
    blocks = sum(depth * (49 * w + w + 2 * w + 4 * w * w + 4 * w + 4 * w * w + w + w)
                 for depth, w in zip(m.depths, c, strict=True))
    return stem + down + blocks + 2 * c[-1] + c[-1] * m.num_classes + m.num_classes  # final LN, classifier


def _convnext_flops(m: ModelConfig) -> float:
    """Per image: 6 × the multiply-accumulates of every convolution and linear layer (depthwise 7×7: 49·C per
    position; point-wise: 8·C² per position; 2×2 down-sampling; the classifier), + 4 × the stem's (its input, the
    pixels, needs no gradient)."""
    c, sides = m.widths, _convnext_stage_sizes(m)
    stem = sides[0] ** 2 * m.num_channels * 16 * c[0]
    down = sum(sides[i] ** 2 * 4 * c[i - 1] * c[i] for i in range(1, len(c)))
    blocks = sum(depth * s * s * (49 * w + 8 * w * w) for depth, s, w in zip(m.depths, sides, c, strict=True))
    return 4.0 * stem + 6.0 * (down + blocks + c[-1] * m.num_classes)


REGISTRY: dict[str, Family] = {
    "gpt_neox": Family(hf_config=hf_configs.gpt_neox_config, blocks=lambda model: list(model.gpt_neox.layers),
                       block_class="GPTNeoXLayer", params=_gpt_params, flops_per_token=_lm_flops(_gpt_matmul_params),
                       matmul_params=_gpt_matmul_params),
    "gpt2": Family(hf_config=hf_configs.gpt2_config, blocks=lambda model: list(model.transformer.h),
                   block_class="GPT2Block",
                   params=_gpt2_params, flops_per_token=_lm_flops(_gpt_matmul_params),
                   matmul_params=_gpt_matmul_params),
    "llama": Family(hf_config=hf_configs.llama_config, blocks=lambda model: list(model.model.layers),
                    block_class="LlamaDecoderLayer", params=_llama_params,
                    flops_per_token=_lm_flops(_llama_matmul_params), matmul_params=_llama_matmul_params),
    "roberta": Family(hf_config=hf_configs.roberta_config, blocks=lambda model: list(model.roberta.encoder.layer),
                      block_class="RobertaLayer", params=_roberta_params,
                      flops_per_token=_lm_flops(_roberta_matmul_params), matmul_params=_roberta_matmul_params,
                      task="masked_lm"),
    # No attention: the 12·L·d·T term is absent, and the scan's cost is linear in T.
    "mamba": Family(hf_config=hf_configs.mamba_config, blocks=lambda model: list(model.backbone.layers),
                    block_class="MambaBlock", params=_mamba_params,
                    flops_per_token=lambda m: 6.0 * _mamba_matmul_params(m), matmul_params=_mamba_matmul_params,
                    attends=False),
    "vit": Family(hf_config=hf_configs.vit_config, blocks=lambda model: list(model.vit.layers), block_class="ViTLayer",
                  params=_vit_params, flops_per_token=_vit_flops, task="image_classification"),
    "convnext": Family(hf_config=hf_configs.convnext_config,
                       blocks=lambda model: [layer for st in model.convnext.encoder.stages for layer in st.layers],
                       block_class="ConvNextLayer", params=_convnext_params, flops_per_token=_convnext_flops,
                       task="image_classification", attends=False),
}
FAMILIES = tuple(REGISTRY)
CAUSAL_LM_FAMILIES = tuple(f for f, fam in REGISTRY.items() if fam.task == "causal_lm")  # real text, targets, fused CE
VISION_FAMILIES = tuple(f for f, fam in REGISTRY.items() if fam.task == "image_classification")  # rates per image
ATTENTION_FREE_FAMILIES = tuple(f for f, fam in REGISTRY.items() if not fam.attends)  # no attention kernel to choose


def family(m: ModelConfig) -> Family:
    return REGISTRY[m.family]


def build_model(m: ModelConfig, attention: str = "sdpa") -> nn.Module:
    """A freshly initialised fp32 model of shape `m`, seeded by the caller's torch RNG state."""
    import transformers

    fam = family(m)
    # from_config may mutate the config it is given (e.g. on a failed attention choice): build from a copy.
    hf_config = copy.deepcopy(fam.hf_config(m))
    kwargs = {} if m.family in ATTENTION_FREE_FAMILIES else {"attn_implementation": attention}
    return getattr(transformers, TASKS[fam.task]).from_config(hf_config, **kwargs)


def blocks(model: nn.Module, m: ModelConfig) -> list[nn.Module]:
    return family(m).blocks(model)


def num_params(m: ModelConfig) -> int:
    return family(m).params(m)


def flops_per_token(m: ModelConfig) -> float:
    """Model FLOPs per trained token (per image for vision models), forward + backward.

    Language models: 6·N_matmul + 12·L·d·T, the convention of PaLM (Chowdhery et al. 2022, App. B), nanoGPT,
    torchtitan and llm-foundry, and of Megatron-LM's original 72·B·s·l·h² formula (Narayanan et al. 2021):
    N_matmul counts every weight that multiplies activations, including the output head and excluding the embedding
    lookup; the attention term counts QKᵀ and AV over the full T×T score matrix (no causal discount) for every query
    head, also under grouped-query attention (fewer K/V heads shrink N_matmul, not the scores). Megatron-LM today
    halves the attention term under a causal mask: `causal_flops_per_token`. Each family's function says what it
    counts beyond that (Mamba's scan, the vision stems). Recomputation from activation checkpointing is *not*
    counted, so MFU reflects useful work only.
    """
    return family(m).flops_per_token(m)


def causal_flops_per_token(m: ModelConfig) -> float:
    """`flops_per_token` with the attention term halved for causal language models (only the lower triangle of the
    scores is needed), as Megatron-LM's `num_floating_point_operations` counts today; other families attend to every
    position, so their figure is unchanged."""
    full = flops_per_token(m)
    if m.family not in CAUSAL_LM_FAMILIES or not family(m).attends:
        return full
    return full - 6.0 * m.num_layers * m.hidden_size * m.seq_len
