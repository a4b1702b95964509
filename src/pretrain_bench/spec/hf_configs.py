"""Our model shapes as `transformers` configs (never from the hub): one builder per family of the registry.

transformers is imported inside each builder, so that counting FLOPs and parameters (`models`) needs no GPU stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the schema sits above this module
    from pretrain_bench.config.schema import ModelConfig


def gpt_neox_config(m: ModelConfig):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, intermediate_size=m.ffn_size, max_position_embeddings=m.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta, "partial_rotary_factor": m.rotary_pct},
        use_parallel_residual=m.parallel_residual, tie_word_embeddings=m.tie_embeddings, use_cache=False,
        attention_dropout=0.0, hidden_dropout=0.0)


def gpt2_config(m: ModelConfig):
    from transformers import GPT2Config

    # No dropout (as nanoGPT and llm.c pre-train): every strategy must compute the same training. No special token
    # ids: training never reads them, and GPT-2's 50256 lies outside a test vocabulary.
    return GPT2Config(
        vocab_size=m.vocab_size, n_embd=m.hidden_size, n_layer=m.num_layers, n_head=m.num_heads,
        n_inner=m.ffn_size, n_positions=m.seq_len, tie_word_embeddings=m.tie_embeddings, use_cache=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)


def llama_config(m: ModelConfig):
    from transformers import LlamaConfig

    # rms_norm_eps 1e-5 as Llama 3.2 and SmolLM2 publish (transformers' default is 1e-6).
    return LlamaConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads or m.num_heads,
        intermediate_size=m.ffn_size, max_position_embeddings=m.seq_len, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
        tie_word_embeddings=m.tie_embeddings, use_cache=False, attention_dropout=0.0)


def roberta_config(m: ModelConfig):
    from transformers import RobertaConfig

    # Positions start after the padding index (fairseq's convention, kept by transformers): seq_len + 2 rows. No
    # dropout, so that every strategy computes the same training (its cost is elementwise, outside the FLOPs).
    return RobertaConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, intermediate_size=m.ffn_size, max_position_embeddings=m.seq_len + 2,
        type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tie_word_embeddings=True,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, use_cache=False)


def mamba_config(m: ModelConfig):
    from transformers import MambaConfig

    # transformers runs the fused `mamba_ssm` / `causal_conv1d` kernels when they are installed, and its pure-PyTorch
    # scan otherwise (the worker records which): both compute the same function.
    return MambaConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers, state_size=m.state_size,
        expand=m.expand, conv_kernel=m.conv_kernel, time_step_rank=mamba_dims(m)[2], use_bias=False,
        use_conv_bias=True, tie_word_embeddings=m.tie_embeddings, use_cache=False, pad_token_id=0,
        bos_token_id=0, eos_token_id=0)


def vit_config(m: ModelConfig):
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=m.hidden_size, num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
        intermediate_size=m.ffn_size, image_size=m.image_size, patch_size=m.patch_size, num_channels=m.num_channels,
        num_labels=m.num_classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True)


def convnext_config(m: ModelConfig):
    from transformers import ConvNextConfig

    return ConvNextConfig(
        num_channels=m.num_channels, patch_size=4, num_stages=len(m.depths), hidden_sizes=list(m.widths),
        depths=list(m.depths), image_size=m.image_size, num_labels=m.num_classes, drop_path_rate=0.0)


def mamba_dims(m: ModelConfig) -> tuple[int, int, int]:
    """Inner width E, state size N and the rank R of the time-step projection (⌈d/16⌉, as the paper sets it)."""
    return m.expand * m.hidden_size, m.state_size, -(-m.hidden_size // 16)

