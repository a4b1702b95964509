"""Faster methods (fused linear-CE, selective checkpointing, SDPA kernel, compile mode, FP8): same math, right wiring.

Tolerances: fused linear-CE and checkpointing change only the order of fp32 sums (per-chunk sums of the head-weight
gradient, a recomputed forward). A reordered fp32 sum differs by a few ulps (relative ~1e-7) per element, so losses
agree to 1e-6 and gradients to 1e-5 relative to each tensor's largest entry (an element that is itself a small
difference of large terms can differ more than 1e-5 of its own size, never of the tensor's scale). A real bug (a
missing label shift, a wrong 1/N, a dropped ignore mask, an untied head) moves the loss or gradients by percents.
Everything runs in-process on tiny models, apart from one 2-process FSDP2 launch.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from pretrain_bench import config
from pretrain_bench.spec import models
from pretrain_bench.train import fused_ce, loop, speedups, strategies, synthetic, tricks
from pretrain_bench.train.strategies.base import Runtime
from pretrain_bench.train.synthetic import SyntheticTokens


def assert_grads_match(ref: torch.nn.Module, other: torch.nn.Module) -> None:
    mine, theirs = dict(ref.named_parameters()), dict(other.named_parameters())
    assert mine.keys() == theirs.keys()  # same tree and names (tied weights stay one parameter)
    for name, p in mine.items():
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(theirs[name].grad, p.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


def loss_and_backward(model, ids):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item()


@pytest.mark.parametrize("name", ["tiny", "tiny-gpt2"])  # GPT-NeoX (untied head), GPT-2 (head tied to embeddings)
def test_fused_linear_ce_equals_unfused_loss_and_gradients(name):
    cfg = config.compose([f"model={name}", "tricks.fused_linear_ce=true"])
    torch.manual_seed(0)
    fused = tricks.build_model(cfg, compile_blocks=False)
    assert isinstance(fused.get_output_embeddings(), fused_ce.FusedLinearCrossEntropyHead)
    if cfg.model.tie_embeddings:
        assert fused.get_output_embeddings().weight is fused.get_input_embeddings().weight
    torch.manual_seed(0)
    plain = models.build_model(cfg.model, attention=cfg.tricks.attention)
    ids = torch.randint(0, cfg.model.vocab_size, (4, cfg.model.seq_len), generator=torch.Generator().manual_seed(1))
    assert loss_and_backward(fused, ids) == pytest.approx(loss_and_backward(plain, ids), rel=1e-6)
    assert_grads_match(plain, fused)
    with torch.no_grad():  # evaluation: the no-gradient path gives the same loss
        want = plain(input_ids=ids, labels=ids).loss.item()
        assert fused(input_ids=ids, labels=ids).loss.item() == pytest.approx(want, rel=1e-6)


def test_linear_cross_entropy_matches_torch_with_ignored_targets_and_odd_chunks():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    targets[::5] = -100
    for kwargs in ({}, {"num_items_in_batch": 64}):
        ref = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, ignore_index=-100,
                                                reduction="sum" if kwargs else "mean")
        ref = ref / 64 if kwargs else ref
        ref_grads = torch.autograd.grad(ref, (hidden, weight))
        out = fused_ce.linear_cross_entropy(hidden, weight, targets, chunk=6, **kwargs)  # 7 chunks, the last short
        grads = torch.autograd.grad(out, (hidden, weight))
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_fused_linear_ce_gradients_survive_fp16_with_loss_scaling():
    """fp16 (a GradScaler scales the loss after the fused head has computed its gradients): softmax × 1/tokens is
    below fp16's smallest subnormal here (1/8192 × 1/4096 ≈ 3e-8), so the gradients must be scaled in backward."""
    torch.manual_seed(0)
    n, d, v = 4096, 32, 8192
    hidden = torch.randn(n, d).half().requires_grad_()
    weight = (torch.randn(v, d) * 0.02).half().requires_grad_()
    targets = torch.randint(0, v, (n,))
    loss_scale = 2.0 ** 16
    (fused_ce.linear_cross_entropy(hidden, weight, targets) * loss_scale).backward()
    h32, w32 = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    torch.nn.functional.cross_entropy(h32 @ w32.t(), targets).backward()
    for mine, ref in ((hidden.grad, h32.grad), (weight.grad, w32.grad)):
        err = (mine.float() / loss_scale - ref).norm() / ref.norm()
        assert err < 1e-2  # fp16 rounding; without the fix the softmax part vanishes (error ~ 100 %)


def test_selective_checkpointing_checkpoints_every_kth_block_with_equal_gradients():
    cfg = config.compose(["model=tiny", "model.num_layers=4", "tricks.activation_checkpointing=true",
                          "tricks.ac_every=2"])
    torch.manual_seed(0)
    ac = tricks.build_model(cfg, compile_blocks=False)
    blocks = models.blocks(ac, cfg.model)
    assert [b.gradient_checkpointing for b in blocks] == [True, False, True, False]
    # A checkpointed block's forward runs again in backward: its MLP starts twice per step, the others' once. (Pre-
    # hooks: the recompute stops early once it has what backward needs, so the MLP's forward never finishes twice.)
    calls = [0] * len(blocks)
    for i, b in enumerate(blocks):
        b.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    torch.manual_seed(0)
    plain = models.build_model(cfg.model, attention=cfg.tricks.attention)
    ids = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.seq_len), generator=torch.Generator().manual_seed(1))
    assert loss_and_backward(ac, ids) == pytest.approx(loss_and_backward(plain, ids), rel=1e-6)
    assert calls == [2, 1, 2, 1]
    assert_grads_match(plain, ac)


def test_blocks_transformers_cannot_checkpoint_are_checkpointed_by_us():
    """ConvNeXt (no checkpointing in transformers): every 2nd block's forward is recomputed, gradients unchanged."""
    cfg = config.compose(["model=tiny-convnext", "tricks.activation_checkpointing=true", "tricks.ac_every=2"])
    torch.manual_seed(0)
    ac = tricks.build_model(cfg, compile_blocks=False)
    blocks = models.blocks(ac, cfg.model)
    calls = [0] * len(blocks)
    for i, b in enumerate(blocks):
        b.pwconv1.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    torch.manual_seed(0)
    plain = models.build_model(cfg.model)
    batch = synthetic.synthetic(cfg.model, 0, torch.device("cpu")).micro_batches(0, 0, 1, 2)[0]
    losses = [m(**batch).loss for m in (ac, plain)]
    for loss in losses:
        loss.backward()
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-6)
    assert calls == [2, 1, 2, 1]
    assert_grads_match(plain, ac)


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_switches_leave_inductors_getters_readable(tf32):
    """Inductor's autotuning reads the legacy TF32 getters; writing torch's newer `fp32_precision` API makes them
    raise, so max-autotune would crash at compile time on a GPU."""
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        tricks.apply_process_settings(config.compose([f"tricks.tf32={str(tf32).lower()}"]))
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
        assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_math_sdpa_backend_is_the_kernel_that_runs_on_cpu():
    cfg = config.compose(["tricks=sdpa", "tricks.attention_backend=math"])
    torch.manual_seed(0)
    model = tricks.build_model(cfg, compile_blocks=False)
    ids = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.seq_len))
    try:
        tricks.apply_process_settings(cfg)
        with torch.profiler.profile() as prof:
            model(input_ids=ids, labels=ids).loss.backward()
    finally:
        speedups.set_sdpa_backend("auto")  # process-wide: leave other tests PyTorch's own choice
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_attention_math" in names
    assert not any("flash_attention" in n for n in names)


def test_compile_mode_reaches_each_block(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))  # no real compile: 30 s
    cfg = config.compose(["tricks=compile", "tricks.compile_mode=max-autotune-no-cudagraphs"])
    tricks.build_model(cfg, compile_blocks=True)
    assert seen == [{"mode": "max-autotune-no-cudagraphs"}] * cfg.model.num_layers
    assert speedups.compile_kwargs(config.compose(["tricks=compile"]).tricks) == {}  # default: torch's own default


def test_fp8_filter_skips_the_head_and_odd_dimensions():
    cfg = config.compose(["model=tiny", "model.intermediate_size=200"])  # 64×200: 200 is not a multiple of 16
    model = models.build_model(cfg.model)
    chosen = {name for name, mod in model.named_modules() if speedups.fp8_filter(mod, name)}
    assert chosen == {f"gpt_neox.layers.{i}.attention.{p}" for i in range(2) for p in ("query_key_value", "dense")}


def test_fp8_filter_skips_mamba_projections_the_fused_kernel_reads_directly():
    cfg = config.compose(["model=tiny-mamba"])
    model = models.build_model(cfg.model)
    leaves = {name.split(".")[-1] for name, mod in model.named_modules() if speedups.fp8_filter(mod, name)}
    assert leaves <= {"in_proj"}  # x_proj, dt_proj, out_proj: their .weight goes straight to mamba_inner_fn


def test_fp8_conversion_that_converts_nothing_fails(monkeypatch):
    import sys
    import types

    def convert(model, module_filter_fn=None, config=None):  # torchao's signature; here it swaps nothing
        return model

    float8 = types.SimpleNamespace(convert_to_float8_training=convert)
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.float8", float8)
    with pytest.raises(ValueError, match="no Linear layer"):
        speedups.convert_fp8(torch.nn.Sequential(torch.nn.Linear(8, 8)))


@pytest.mark.parametrize(("overrides", "key", "words"), [
    (["tricks.ac_every=0", "tricks.activation_checkpointing=true"], "tricks.ac_every", ["≥ 1"]),
    (["tricks.ac_every=2"], "tricks.ac_every", ["activation_checkpointing=true"]),
    (["tricks.ac_every=3", "tricks.activation_checkpointing=true"], "tricks.ac_every", ["num_layers (2)"]),
    (["tricks.attention_backend=fast"], "tricks.attention_backend", ["auto, flash, cudnn, efficient, math"]),
    (["tricks.attention_backend=math"], "tricks.attention_backend", ["attention=sdpa", "'eager'"]),
    (["tricks=sdpa", "tricks.attention_backend=flash"], "tricks.attention_backend", ["CUDA", "auto, math"]),
    (["hardware=1xa100", "model=pythia-160m", "tricks=sdpa", "tricks.attention_backend=flash"],
     "tricks.attention_backend", ["bf16/fp16", "efficient"]),
    (["hardware=8xv100", "strategy=ddp", "model=pythia-160m", "tricks=sdpa", "tricks.precision=fp16",
      "tricks.attention_backend=cudnn"], "tricks.attention_backend", ["Ampere"]),
    (["tricks.compile_mode=fastest"], "tricks.compile_mode", ["default, max-autotune"]),
    (["tricks.compile_mode=max-autotune-no-cudagraphs"], "tricks.compile_mode", ["tricks.compile=true"]),
    (["tricks=compile", "tricks.compile_mode=reduce-overhead"], "tricks.compile_mode", ["CUDA graphs", "CPU"]),
    (["tricks=compile", "tricks.fp8=true"], "tricks.fp8", ["FP8 tensor cores", "CPU"]),
    (["hardware=1xa100", "model=pythia-160m", "tricks=free-lunch", "tricks.fp8=true"], "tricks.fp8", ["A100"]),
    (["hardware=2xh100", "strategy=zero2", "model=pythia-160m", "tricks=free-lunch", "tricks.fp8=true"],
     "tricks.fp8", ["deepspeed"]),
    (["hardware=1xh100", "model=pythia-160m", "tricks=bf16", "tricks.fp8=true"], "tricks.fp8", ["compile=true"]),
    (["hardware=1xh100", "model=gpt2-124m", "tricks=free-lunch", "tricks.fp8=true"], "tricks.fp8", ["Conv1D"]),
    (["hardware=1xh100", "model=vit-l16", "tricks=free-lunch", "tricks.fp8=true", "micro_batch=8"], "micro_batch",
     ["197 positions", "multiples of 16"]),  # ViT: 196 patches + class token
    (["hardware=1xh100", "model=convnext-xl", "tricks=free-lunch", "tricks.fp8=true", "micro_batch=4"], "micro_batch",
     ["3136, 784, 196, 49", "multiples of 16"]),
    (["hardware=1xh100", "model=llama-3.2-1b", "tricks=free-lunch", "tricks.attention_backend=efficient"],
     "tricks.attention_backend", ["grouped-query", "auto, flash, math"]),
    (["hardware=1xh100", "model=smollm2-135m", "tricks=free-lunch", "tricks.attention_backend=cudnn"],
     "tricks.attention_backend", ["grouped-query"]),
    (["hardware=1xh100", "model=pythia-160m", "tricks=free-lunch", "model.num_heads=2",
      "tricks.attention_backend=flash"], "tricks.attention_backend", ["≤ 256", "384"]),
    (["hardware=2xh100", "strategy=fsdp", "model=pythia-160m", "tricks=free-lunch",
      "tricks.compile_mode=reduce-overhead"], "tricks.compile_mode", ["CUDA graphs", "fsdp"]),
    (["hardware=2xh100", "strategy=zero3", "model=pythia-160m", "tricks=free-lunch",
      "tricks.compile_mode=max-autotune"], "tricks.compile_mode", ["zero3", "max-autotune-no-cudagraphs"]),
    (["hardware=2xh100", "strategy=ddp", "model=pythia-160m", "tricks=free-lunch", "model.global_batch=16",
      "micro_batch=4", "tricks.compile_mode=reduce-overhead"], "tricks.compile_mode",
     ["accumulation (2 micro-batches", "micro_batch = 8"]),
    (["hardware=2xh100", "strategy=zero2", "model=pythia-160m", "tricks=free-lunch", "model.global_batch=16",
      "micro_batch=2", "tricks.compile_mode=max-autotune"], "tricks.compile_mode", ["max-autotune-no-cudagraphs"]),
])
def test_bad_fast_method_settings_name_the_key(overrides, key, words):
    with pytest.raises(config.ConfigError) as err:
        config.compose(overrides)
    assert err.value.key == key
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("overrides", [
    ["hardware=1xh100", "model=llama-3.2-1b", "tricks=free-lunch", "tricks.attention_backend=flash"],
    ["hardware=1xh100", "model=smollm2-1.7b", "tricks=free-lunch", "tricks.attention_backend=efficient"],  # MHA
    ["hardware=2xh100", "strategy=ddp", "model=pythia-160m", "tricks=free-lunch", "model.global_batch=16",
     "micro_batch=8", "tricks.compile_mode=reduce-overhead"],
    ["hardware=2xh100", "strategy=zero2", "model=pythia-160m", "tricks=free-lunch", "model.global_batch=16",
     "micro_batch=8", "tricks.compile_mode=max-autotune"],
])
def test_gpu_fast_method_combinations_that_can_run_are_accepted(overrides):
    config.compose(overrides)


def test_fp8_without_torchao_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torchao" else real(name))
    with pytest.raises(config.ConfigError, match="`torchao`"):
        config.compose(["hardware=1xh100", "model=pythia-160m", "tricks=free-lunch", "tricks.fp8=true"])


def test_labels_name_every_fast_method():
    label = config.tricks_label
    tr = config.compose(["tricks=free-lunch-ac", "tricks.ac_every=2", "tricks.fused_linear_ce=true"]).tricks
    assert label(tr) == "free-lunch+flce+ac/2"
    tr = config.compose(["tricks=sdpa", "tricks.attention_backend=math", "tricks.compile=true",
                         "tricks.compile_mode=max-autotune-no-cudagraphs"]).tricks
    assert label(tr) == "sdpa+compile+compile-max-autotune-no-cudagraphs+sdpa-math"
    assert label(config.FREE_LUNCH) == "free-lunch" and label(config.NAIVE) == "naive"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FP8 needs a CUDA GPU")
def test_fp8_linear_layers_train_close_to_bf16():
    pytest.importorskip("torchao")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9 or newer")
    cfg = config.compose(["model=tiny", "model.hidden_size=128", "tricks.precision=bf16"])
    torch.manual_seed(0)
    ref = models.build_model(cfg.model).cuda()
    fp8 = speedups.convert_fp8(copy.deepcopy(ref))
    assert any(type(m).__name__ == "Float8Linear" for m in fp8.modules())
    ids = torch.randint(0, cfg.model.vocab_size, (4, cfg.model.seq_len), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref_loss, fp8_loss = ref(input_ids=ids, labels=ids).loss, fp8(input_ids=ids, labels=ids).loss
    fp8_loss.backward()
    assert fp8_loss.item() == pytest.approx(ref_loss.item(), rel=2e-2)  # lower precision: e4m3 keeps ~2 digits


def train_in_process(overrides: list[str]) -> list[float]:
    """The single-process reference curve without a launch (one rank, no process group needed)."""
    cfg = config.compose(overrides)
    rt = Runtime(device=torch.device("cpu"), rank=0, local_rank=0, world=1)
    tricks.apply_process_settings(cfg)
    torch.manual_seed(cfg.seed)
    strategy = strategies.create(cfg, rt)
    model = strategy.wrap(tricks.build_model(cfg, compile_blocks=strategy.compiles_blocks))
    data = SyntheticTokens(cfg.model.vocab_size, cfg.model.seq_len, cfg.model.global_batch, cfg.seed, rt.device)
    return [log.loss for log in loop.train(model, strategy, data, rt, cfg.micro_batch, cfg.warmup_steps + cfg.steps)]


@pytest.mark.distributed
def test_fused_linear_ce_under_fsdp2_matches_the_unfused_run(run_cell):
    """2 FSDP2 ranks with the fused head (its weight lives in the root's shards) train like 1 process without it.

    The unfused 2-rank FSDP2 run is already proven equal to this single-process curve (test_strategies), so the
    reference runs in-process and the suite pays for one launch only."""
    common = ["model=tiny", "model.recipe.lr=1e-2", "model.recipe.warmup_ratio=0", "tricks=naive", "steps=5",
              "warmup_steps=2", "seed=7"]
    reference = train_in_process([*common, "hardware=cpu-1", "strategy=single", "micro_batch=4"])
    outcome = run_cell(*common, "hardware=cpu-2", "strategy=fsdp", "micro_batch=2", "tricks.fused_linear_ce=true")
    assert outcome.measurement["losses"] == pytest.approx(reference, rel=1e-5)
    assert max(reference) - min(reference) > 0.01
