"""`pretrain-bench run` end to end: one cell in real worker processes, one valid record; bad input exits early."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pretrain_bench import cli
from pretrain_bench.analysis import record
from pretrain_bench.bench import launch
from pretrain_bench.bench.store import Store


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain_bench.cli", *args], capture_output=True, text=True)


@pytest.mark.distributed
def test_run_appends_one_valid_record(tmp_path):
    store = tmp_path / "store"
    done = bench("run", "model=tiny", "hardware=cpu-2", "strategy=ddp", "micro_batch=2", "steps=5",
                 "warmup_steps=1", f"store={store}")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "[ok] tiny on cpu-2 · ddp · naive · micro-batch 2 × accumulation 2" in done.stdout
    [r] = Store(store).records()
    assert record.problems(r) == []
    assert r["status"] == "ok" and r["cell"]["world_size"] == 2 and r["flops"]["mfu"] is None
    assert len(r["timing"]["step_s"]) == 5 and len(r["losses"]) == 6
    assert r["memory"]["kind"] == "cpu_max_rss" and r["memory"]["peak_gib"] > 0
    assert r["env"]["torch"] and r["env"]["device_name"] == "cpu"
    assert (Store(store).run_dir(f"{r['key']}-throughput") / "log.txt").exists()
    again = bench("run", "model=tiny", "hardware=cpu-2", "strategy=ddp", "micro_batch=2", "steps=5",
                  "warmup_steps=1", f"store={store}")
    assert again.returncode == 0 and "already measured" in again.stdout
    assert len(Store(store).records()) == 1  # resumed: nothing measured twice
    table = bench("table", "--store", str(store))
    assert "| ★ | tiny | cpu-2 | ddp | naive | 2×2 |" in table.stdout


@pytest.mark.parametrize("overrides, words", [
    (["model=pythia-99m"], "Available options in 'model'"),
    (["hardware=cpu-2", "strategy=ddp", "micro_batch=3"], "must be divisible"),
    (["hardware=1xh100"], "needs 1 CUDA GPUs"),
])
def test_bad_input_exits_2_before_any_worker(tmp_path, overrides, words, capsys):
    start = time.monotonic()
    code = cli.main(["run", *overrides, f"store={tmp_path / 'store'}"])
    assert code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "store" / "runs").exists()  # no worker was launched
    assert time.monotonic() - start < 30


def test_ranks_split_the_cores_unless_told_otherwise():
    import os

    from pretrain_bench import config

    cores = len(os.sched_getaffinity(0))
    cfg = config.compose(["model=tiny", "hardware=8xh100", "strategy=zero2-offload", "micro_batch=1"])
    env = launch.worker_env(cfg)
    assert env["OMP_NUM_THREADS"] == str(max(1, cores // 8)) and env["DS_ACCELERATOR"] == "cuda"
    env = launch.worker_env(config.compose(["model=tiny", "hardware=cpu-2", "strategy=ddp", "+env.OMP_NUM_THREADS=3"]))
    assert env["OMP_NUM_THREADS"] == "3" and env["DS_ACCELERATOR"] == "cpu"


@pytest.mark.distributed
def test_timeout_kills_all_ranks(tmp_path):
    from pretrain_bench import config

    cfg = config.compose(["model=tiny", "hardware=cpu-2", "strategy=ddp", "timeout_s=1"])
    outcome = launch.run_cell(cfg, tmp_path / "cell")
    assert outcome.status == "timeout"
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert leftover == ""


@pytest.mark.distributed
def test_validate_compares_extrapolation_with_a_long_run(tmp_path):
    done = bench("validate", "model=tiny", "hardware=cpu-1", "strategy=single", "steps=20", f"store={tmp_path}",
                 "--reference-steps", "5")
    assert done.returncode == 0, done.stderr + done.stdout
    [result] = [json.loads(p.read_text()) for p in tmp_path.glob("validate-*.json")]
    assert result["steps"] == 20 and result["measured_s"] > 0
    assert abs(result["error"]) < 1.0  # a sanity bound only: CPU timing on a shared machine is noisy
    kinds = sorted(r["kind"] for r in Store(tmp_path).records())
    assert kinds == ["throughput", "validate"]


@pytest.mark.distributed
def test_legacy_timing_is_recorded_side_by_side_and_never_ranked(tmp_path):
    done = bench("run", "model=tiny", "hardware=cpu-1", "strategy=single", "timing=legacy", "steps=5",
                 f"store={tmp_path}")
    assert done.returncode == 3  # a legacy record is not a valid result: a finding, not a crash
    [r] = Store(tmp_path).records()
    assert not r["valid"] and "legacy" in r["invalid_reason"]
    assert r["timing"]["stats"] == r["timing"]["legacy"]["stats"]  # the headline figure is the legacy one
    assert r["timing"]["honest_stats"]["n"] == 5 and r["timing"]["legacy"]["ratio_to_honest"] > 0
    assert "★" not in bench("table", "--store", str(tmp_path)).stdout


def test_reproduce_puts_our_figure_beside_each_claim(tmp_path):
    from test_record import make

    Store(tmp_path).append(make([32.2] * 5))  # pythia-1b on one H100: 1024 × 2048 / 32.2 = 65,127 tokens/s
    out = bench("reproduce", "--store", str(tmp_path)).stdout
    row = next(line for line in out.splitlines() if line.startswith("| kh24-1b-4xh100 "))
    assert "optimistic" in row and "scaled" not in row
    assert "13.3 d" in row  # 299.9e9 tokens / (4 GPUs × 65,127 tokens/s) / 86,400 s = 13.3 days
    assert "exceeds peak" in out and "scaled from H100 SXM5 80GB" in out


@pytest.mark.distributed
def test_profile_writes_traces_and_a_breakdown(tmp_path):
    done = bench("profile", "model=tiny", "hardware=cpu-2", "strategy=ddp", "model.global_batch=16", "steps=5",
                 "warmup_steps=3", f"store={tmp_path}")
    assert done.returncode == 0, done.stderr + done.stdout
    [r] = Store(tmp_path).records()
    prof = r["profile"]
    assert r["kind"] == "profile" and not r["valid"]  # profiler overhead: never ranked
    # Two steps after two warm-up ones, at accumulation 2 instead of the cell's 4: a trace that stays small.
    assert r["cell"]["grad_accum"] == 2 and r["timing"]["stats"]["n"] == 2 and len(r["losses"]) == 4
    assert "at micro-batch 2 × accumulation 2 (the cell's is 4: global batch 8 instead of 16)" in done.stdout
    assert done.stdout.count("trace_rank") == 2 and "https://ui.perfetto.dev" in done.stdout
    assert prof["seconds"]["matmul"] > 0 and prof["seconds"]["communication"] > 0
    # Self times, not inclusive ones: the main thread's categories fit in the wall time. Communication runs on gloo's
    # thread, overlapping them, so the sum of all categories may exceed it.
    compute = prof["seconds"]["matmul"] + prof["seconds"]["attention"] + prof["seconds"]["optimizer"]
    assert compute <= prof["wall_s"] * 1.05
    assert "matmul" in done.stdout and json.loads(open(prof["trace"]).read())["traceEvents"]


@pytest.mark.parametrize("name, expected", [
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
    ("gloo:all_reduce", "communication"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", "matmul"),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNT", "matmul"),
    ("triton_tem_fused_mm_0", "matmul"),
    ("aten::addmm", "matmul"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4>, true>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
    ("aten::_softmax", "attention"),
    ("cunn_SoftMaxForward<4, float, float, float, LogSoftMaxForwardEpilogue>", "other"),  # the loss, not attention
    ("aten::_log_softmax", "other"),
    ("multi_tensor_apply_kernel<TensorListMetadata<4>, FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("triton_per_fused_native_layer_norm_0", "other"),
])
def test_profile_categories_name_kernels_and_operators(name, expected):
    from pretrain_bench.train.profiling import category

    assert category(name) == expected


def test_gpu_breakdown_counts_each_kernel_once():
    from types import SimpleNamespace as E

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import Interval

    from pretrain_bench.train.profiling import kernel_totals

    def event(name, device, start, end, annotation=False):
        return E(name=name, device_type=device, time_range=Interval(start, end), is_user_annotation=annotation)

    events = [event("ProfilerStep#3", DeviceType.CUDA, 0, 1000, annotation=True),  # spans the step: no work
              event("aten::mm", DeviceType.CPU, 0, 20),  # launches the gemm: its device time is the kernel's
              event("nvjet_tst_gemm", DeviceType.CUDA, 30, 130),
              event("ncclDevKernel_AllReduce", DeviceType.CUDA, 100, 300),
              event("nvjet_tst_gemm", DeviceType.CUDA, 500, 600)]
    totals, busy_s = kernel_totals(events)
    assert totals == pytest.approx({"nvjet_tst_gemm": 200e-6, "ncclDevKernel_AllReduce": 200e-6})
    assert busy_s == pytest.approx(370e-6)  # 30–300 and 500–600


def test_export_writes_the_best_method_and_plot_draws_the_store(tmp_path):
    from test_record import make

    store = Store(tmp_path / "store")
    store.append(make([40.0] * 5))
    store.append(make([32.2] * 5, ("model=pythia-1b", "hardware=1xh100", "tricks=free-lunch", "micro_batch=16")))
    out = tmp_path / "out"
    done = bench("export", "model=pythia-1b", "hardware=1xh100", "--to", "hf", "--store", str(store.root),
                 "--out", str(out))
    assert done.returncode == 0, done.stderr
    [written] = out.glob("pythia-1b_1xh100_single_free-lunch_mb16_*.training_args.json")
    assert json.loads(written.read_text())["per_device_train_batch_size"] == 16  # the faster of the two
    assert len(list(out.glob("*.hf-notes.md"))) == 1
    store.append(make([600.0] * 5, ("model=pythia-1b", "hardware=1xh100", "tricks=naive", "micro_batch=8")))
    slower = bench("export", "model=pythia-1b", "hardware=1xh100", "tricks=naive", "--store", str(store.root),
                   "--out", str(out))  # narrowed to the naive records
    assert slower.returncode == 0 and "_naive_mb8_" in slower.stdout, slower.stderr
    assert len(list(out.glob("*.training_args.json"))) == 2  # the second export does not overwrite the first
    key = next(r["key"] for r in store.records()
               if (r["cell"]["tricks"], r["cell"]["micro_batch"]) == ("free-lunch", 8))
    by_key = bench("export", f"key={key[:10]}", "--to", "accelerate", "--store", str(store.root), "--out", str(out))
    assert by_key.returncode == 0 and f"_mb8_{key[:8]}.accelerate.yaml" in by_key.stdout
    refused = bench("export", "model=pythia-1b", "hardware=1xh100", "--to", "deepspeed", "--store", str(store.root))
    assert refused.returncode == 2 and "zero2" in refused.stderr
    missing = bench("export", "model=pythia-410m", "hardware=1xh100", "--store", str(store.root))
    assert missing.returncode == 2 and "pretrain-bench search" in missing.stderr
    assert bench("export", "key=zzzzzz", "--store", str(store.root)).returncode == 2
    drawn = bench("plot", "--store", str(store.root), "--out", str(tmp_path / "plots"))
    assert drawn.returncode == 0 and (tmp_path / "plots" / "days_vs_gpus.png").stat().st_size > 0
