"""`pretrain-bench peers`: the HF Trainer and our loop train the same model on the same tokens, alternating, and the
table compares them. One real launch pair (HF + ours, about 30 s); everything else runs in-process."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from test_export import isolated, training_arguments  # noqa: F401 (fixtures: TrainingArguments as on a GPU)
from test_record import make

from pretrain_bench import cli, config
from pretrain_bench.analysis import peers, record, report
from pretrain_bench.bench.store import Store


def peer_record(step_s: list[float], status: str = "ok") -> dict:
    """An HF Trainer record of pythia-1b on one H100 (free-lunch), as the worker's `hf-trainer` mode writes it."""
    cfg = config.compose(["model=pythia-1b", "hardware=1xh100", "tricks=free-lunch", "micro_batch=8"])
    env = {**record.library_versions(), "gpu_sku": "h100", "device_name": "NVIDIA H100 80GB HBM3"}
    measurement = {"step_s": step_s, "first_step_s": 90.0, "setup_s": 5.0, "timed_wall_s": sum(step_s),
                   "losses": [10.9, 10.8], "grad_norms": [1.0, 0.9], "skipped_steps": 0,
                   "peak_mem_bytes": 40 * 2**30, "mem_kind": "cuda_max_allocated",
                   "peer": {"name": "hf-trainer", "timing_method": "TrainerCallback", "training_args": {}}}
    ok = status == "ok"
    return record.make_record(cfg, record.cell_key(cfg, env, "h100"), status, None if ok else "CUDA out of memory",
                              measurement if ok else None, env, kind="peer")


@pytest.mark.distributed
def test_peers_runs_both_sides_on_the_same_model_and_tokens(tmp_path, capsys):
    store = tmp_path / "store"
    code = cli.main(["peers", "model=tiny", "hardware=cpu-1", "tricks=naive", "steps=5", "warmup_steps=1",
                     "peers.repeats=1", f"store={store}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("  step 6/6 · ") == 2 and out.count("log: ") == 2  # both sides' steps are shown as they run
    records = Store(store).records()
    assert [r["kind"] for r in records] == ["peer", "throughput"]  # HF first, then ours
    hf, ours = records
    for r in records:
        assert record.problems(json.loads(json.dumps(r))) == [] and r["status"] == "ok" and r["valid"]
        assert len(r["timing"]["step_s"]) == 5 and len(r["losses"]) == 6 and r["flops"]["mfu"] is None
    assert hf["peer"]["name"] == "hf-trainer" and hf["peer"]["training_args"]["optim"] == "adamw_torch"
    assert hf["timing"]["legacy"] is None and "on_step_begin" in hf["timing"]["method"]
    # Same initial weights, same tokens, same loss scaling: step 1 (before any update) agrees to float rounding.
    # Later steps differ: the Trainer's warm-up starts at lr 0, ours at lr/warm-up steps.
    assert hf["losses"][0] == pytest.approx(ours["losses"][0], rel=1e-6)
    assert hf["grad_norms"][0] == pytest.approx(ours["grad_norms"][0], rel=1e-5)
    table = (store / "peers-tiny-cpu-1.md").read_text()
    assert re.search(r"\*\*ours / HF: \d+\.\d\d×\*\*", table) and table in out
    assert "| HF Trainer | single · naive | 2×4 |" in table and "| pretrain-bench | single · naive | 2×4 |" in table
    assert "| ★ |" in report.table(records) and "hf-trainer" not in report.table(records)  # a peer is never ranked
    assert record.best_record(records, "tiny", "cpu-1") is ours


def test_runs_alternate_hf_first():
    hf, ours = (config.compose([f"micro_batch={mb}"]) for mb in (1, 2))
    calls = []
    records = peers.measure_alternating(lambda cfg, kind: calls.append((cfg.micro_batch, kind)) or len(calls),
                                        hf, ours, repeats=2)
    assert calls == [(1, "peer"), (2, "throughput"), (1, "peer"), (2, "throughput")]
    assert records == {"hf": [1, 3], "ours": [2, 4]}


def test_table_has_median_speed_mfu_and_ratio():
    hf_runs = [peer_record([33.0] * 5), peer_record([35.0] * 5), peer_record([34.0] * 5)]
    ours_runs = [make([32.0] * 5), make([31.0] * 5), make([60.0] * 5)]  # a slow outlier: the median ignores it
    rows = {"hf": peers.side_row("hf", hf_runs), "ours": peers.side_row("ours", ours_runs)}
    assert rows["hf"]["tokens_per_s"] == pytest.approx(1024 * 2048 / 34.0)
    assert peers.ratio(rows) == pytest.approx(34.0 / 32.0)
    # MFU at the median speed: 6·N_matmul + attention FLOPs per token × tokens/s over the H100's bf16 peak
    assert rows["ours"]["mfu"] == pytest.approx(ours_runs[0]["flops"]["mfu"])
    text = peers.render("pythia-1b", "1xh100", "h100", rows, repeats=3, steps=5)
    assert "**ours / HF: 1.06×** (median tokens/s)" in text
    hf_line = next(line for line in text.splitlines() if line.startswith("| HF Trainer"))
    assert "| single · free-lunch | 8×128 | 61,681 | 63,550, 59,919, 61,681 |" in hf_line
    assert re.search(r"\| \d\d\.\d% \|", hf_line) and "| 10.9000 | ok, ok, ok |" in hf_line


def test_a_side_without_an_ok_run_has_no_ratio():
    oom = peer_record([], status="oom")
    assert record.problems(oom) == []
    rows = {"hf": peers.side_row("hf", [oom]), "ours": peers.side_row("ours", [make([32.0])])}
    assert peers.ratio(rows) is None
    text = peers.render("pythia-1b", "1xh100", "h100", rows, repeats=1, steps=5)
    assert "| HF Trainer | single · free-lunch | 8×128 | — | — | — | — | — | — | oom |" in text
    assert "**ours / HF: n/a**" in text


def test_ours_is_the_best_stored_method_and_hf_takes_its_micro_batch():
    cfg = config.compose(["model=pythia-1b", "hardware=1xh100", "tricks=free-lunch"])
    assert peers.ours_config(cfg, None) is cfg
    best = make([32.0] * 5, ("model=pythia-1b", "hardware=1xh100", "tricks=free-lunch-ac", "micro_batch=16"))
    ours = peers.ours_config(dataclasses.replace(cfg, steps=7), best)
    assert (ours.micro_batch, ours.tricks.activation_checkpointing, ours.steps) == (16, True, 7)
    hf = peers.hf_config(cfg, ours.micro_batch)
    assert (hf.micro_batch, hf.strategy.backend, hf.tricks.activation_checkpointing) == (16, "single", False)
    ddp = peers.hf_config(config.compose(["model=pythia-1b", "hardware=8xh100", "strategy=zero2"]), 4)
    assert ddp.strategy.backend == "ddp"  # several devices: the Trainer under torchrun is DDP


def test_hf_side_gets_the_free_lunch_training_arguments(tmp_path, training_arguments):  # noqa: F811
    from pretrain_bench.train import hf_trainer

    cfg = config.compose(["model=pythia-410m", "hardware=1xh100", "tricks=free-lunch", "micro_batch=16"])
    kwargs = hf_trainer.training_arguments(cfg, tmp_path)
    args = training_arguments({k: v for k, v in kwargs.items() if k != "output_dir"})
    assert args.fp16 and not args.bf16 and args.tf32 and args.torch_compile  # Pythia's recipe is fp16
    assert args.optim == "adamw_torch_fused" and args.per_device_train_batch_size == 16
    assert args.gradient_accumulation_steps == 1024 // 16 and args.max_steps == cfg.model.recipe.steps
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.learning_rate == cfg.model.recipe.lr
    assert args.save_strategy == "no" and args.report_to in ([], "none", ["none"])
    assert kwargs["output_dir"].startswith(str(tmp_path)) and args.train_sampling_strategy == "sequential"
    assert not args.logging_nan_inf_filter  # its isnan/isinf check would sync the GPU after every micro-batch


def test_hf_side_leaves_the_tf32_getters_inductor_reads_usable(tmp_path, monkeypatch):
    import torch
    import transformers.training_args as ta

    from pretrain_bench.train import hf_trainer

    monkeypatch.setattr(ta, "is_torch_tf32_available", lambda: True)  # as on an H100: TrainingArguments writes TF32
    monkeypatch.setattr(ta, "is_torch_bf16_gpu_available", lambda: True)
    cfg = config.compose(["model=tiny", "hardware=1xh100", "tricks=free-lunch"])
    # transformers writes torch.backends.fp32_precision: put back every level of it, or later tests in this process
    # find cuDNN's conv and RNN flags out of step and the legacy getters raise
    backends = (torch.backends, torch.backends.cuda.matmul, torch.backends.cudnn, torch.backends.cudnn.conv,
                torch.backends.cudnn.rnn)
    before = [b.fp32_precision for b in backends], torch.get_float32_matmul_precision()
    try:
        hf_trainer.trainer_arguments(cfg, hf_trainer.training_arguments(cfg, tmp_path))
        assert torch.get_float32_matmul_precision() == "high"  # raised after transformers' fp32_precision write
    finally:
        for backend, value in zip(backends, before[0], strict=True):
            backend.fp32_precision = value
        torch.set_float32_matmul_precision(before[1])


@pytest.mark.parametrize("overrides, key", [
    (["peers.repeats=0"], "peers.repeats"),
    (["peers.repeat=2"], "peers.repeat"),
    (["data=stdlib"], "data"),
    (["timing=legacy"], "timing"),
    (["tricks.fused_linear_ce=true"], "tricks.fused_linear_ce"),  # the HF side cannot run it
])
def test_bad_peers_config_exits_2_naming_the_key(tmp_path, capsys, overrides, key):
    code = cli.main(["peers", "model=tiny", "hardware=cpu-1", "tricks=naive", *overrides, f"store={tmp_path}"])
    assert code == 2
    assert f"invalid config `{key}`" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no worker was launched
