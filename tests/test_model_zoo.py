"""Every family beyond Pythia (GPT-2, Llama, RoBERTa, Mamba, ViT, ConvNeXt): built models match the analytic counts
and published shapes give the published sizes (that every backend trains them alike is in test_strategies.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from pretrain_bench import config
from pretrain_bench.spec import models
from pretrain_bench.train import synthetic

TINY = ("tiny-gpt2", "tiny-llama", "tiny-roberta", "tiny-mamba", "tiny-vit", "tiny-convnext")


def _conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                   _output_padding, _groups, output_mask, out_shape, **kwargs) -> int:
    """torch's own formula ignores `groups` in the backward of a grouped convolution (it counts a depthwise
    convolution's gradient as if it were dense); each requested gradient costs what the forward costs."""
    return sum(output_mask[:2]) * conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)


def counted_flops_per_unit(m: config.ModelConfig) -> float:
    """FlopCounterMode's count of one eager forward + backward, per token (per image for vision)."""
    model = models.build_model(m, attention="eager")
    batch = synthetic.as_inputs(synthetic.synthetic(m, seed=0, device=torch.device("cpu")).micro_batches(0, 0, 1, 2)[0])
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward}) as c:
        model(**batch).loss.backward()
    return c.get_total_flops() / (2 * m.tokens_per_sample)


@pytest.mark.parametrize("name", TINY)
def test_built_model_matches_analytic_counts(name):
    """Parameters exactly; FLOPs as FlopCounterMode counts every matmul and convolution of forward + backward.
    Transformers match exactly (attention over the full T×T scores for every query head, as our formula counts; RoPE
    angles are elementwise), and so do the vision models (their first layer computes no input gradient). Mamba
    within 0.2 %: the causal convolution is computed over T + K − 1 padded positions and cut to T, and we count T."""
    m = config.compose([f"model={name}"]).model
    model = models.build_model(m, attention="eager")
    assert sum(p.numel() for p in model.parameters()) == models.num_params(m)
    assert len(models.blocks(model, m)) == m.num_layers
    assert {type(b).__name__ for b in models.blocks(model, m)} == {models.family(m).block_class}
    counted = counted_flops_per_unit(m)
    tolerance = 2e-3 if m.family == "mamba" else 1e-9
    assert abs(counted - models.flops_per_token(m)) / counted < tolerance


# Total parameters of the released checkpoints (tied embeddings counted once): transformers' num_parameters() for
# GPT-2 at its real 50,257-token vocabulary, Llama-3.2-1B and SmolLM2 (whose model cards say 362M and 1.71B);
# state-spaces/mamba-2.8b; timm's vit_large_patch16_224 and convnext_xlarge with the 1000-class head of their
# published parameter tables (304.3M, 350.2M).
PUBLISHED = {
    "gpt2-124m": 124_439_808, "gpt2-355m": 354_823_168, "gpt2-774m": 774_030_080, "gpt2-1.5b": 1_557_611_200,
    "llama-3.2-1b": 1_235_814_400,
    "smollm2-135m": 134_515_008, "smollm2-360m": 361_821_120, "smollm2-1.7b": 1_711_376_384,
    "mamba-2.8b": 2_768_345_600, "vit-l16": 304_326_632, "convnext-xl": 350_196_968,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_shapes_give_published_sizes(name):
    overrides = {"gpt2": ["model.vocab_size=50257"], "vit": ["model.num_classes=1000"],
                 "convnext": ["model.num_classes=1000"]}
    m = config.compose([f"model={name}"]).model
    m = config.compose([f"model={name}", *overrides.get(m.family, [])]).model
    assert models.num_params(m) == PUBLISHED[name]


def test_roberta_large_encoder_has_the_published_size():
    """roberta-large's encoder (RobertaModel, with the pooler its checkpoint ships) has 355,359,744 parameters; our
    masked-LM model has the MLM head (d×d dense, LayerNorm, vocabulary bias; decoder tied) instead of the pooler."""
    m = config.compose(["model=roberta-large"]).model
    d, v = m.hidden_size, m.vocab_size
    assert models.num_params(m) - (d * d + d + 2 * d + v) + (d * d + d) == 355_359_744


@pytest.mark.parametrize("name, published_gmacs", [("vit-l16", 61.6), ("convnext-xl", 60.9)])
def test_vision_flops_match_published_forward_cost(name, published_gmacs):
    """The papers' forward cost at 224² (ViT: Dosovitskiy et al. via timm, 61.6 GMACs; ConvNeXt-XL: Liu et al. 2022
    Table 11, 60.9 G) with a 1000-class head: our per-image training FLOPs ≈ 6 × forward multiply-accumulates."""
    m = config.compose([f"model={name}", "model.num_classes=1000"]).model
    assert models.flops_per_token(m) / 6 / 1e9 == pytest.approx(published_gmacs, rel=5e-3)


def test_gpt2_padded_vocabulary():
    """The configs pad GPT-2's vocabulary to 50,304 (nanoGPT, llm.c): 47 more embedding rows, one tied matrix."""
    m = config.compose(["model=gpt2-124m"]).model
    assert (m.vocab_size, models.num_params(m)) == (50304, 124_475_904)


@pytest.mark.parametrize("overrides, key, words", [
    (["model=tiny-llama", "model.num_kv_heads=3"], "model.num_kv_heads", ["divide", "num_heads (4)"]),
    (["model=tiny-llama", "model.num_kv_heads=0"], "model.num_kv_heads", ["≥ 1"]),
    (["model=tiny", "model.num_kv_heads=2"], "model.num_kv_heads", ["llama", "gpt_neox"]),
    (["model=tiny-vit", "model.patch_size=7"], "model.patch_size", ["divide", "image_size (32)"]),
    (["model=tiny-convnext", "model.depths=[1,1]"], "model.depths", ["equal"]),
    (["model=tiny-convnext", "model.hidden_size=32"], "model.hidden_size", ["last width (64)"]),
    (["model=tiny-roberta", "model.mask_prob=0"], "model.mask_prob", ["(0, 1)"]),
    (["model=tiny-vit", "data=stdlib"], "data.source", ["causal language models", "data=synthetic"]),
])
def test_bad_family_keys_fail_naming_the_key(overrides, key, words):
    with pytest.raises(config.ConfigError) as err:
        config.compose(overrides)
    assert err.value.key == key
    assert all(word in str(err.value) for word in words), str(err.value)
