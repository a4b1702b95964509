"""The performance model: hand-computed pieces, the published-data checks and their bars, and the four commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain_bench import cli, config
from pretrain_bench.analysis import record
from pretrain_bench.analysis.perf import comms, compute, efficiency, memcheck, memory, plan, records, reference
from pretrain_bench.analysis.perf.workload import Gemm, Workload, from_config
from pretrain_bench.bench.store import Store
from pretrain_bench.spec import gpus

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
GIB = 2**30


def gpt(**changes) -> Workload:
    m = config.ModelConfig(name="t", family="gpt2", hidden_size=1024, num_layers=4, num_heads=16, vocab_size=1000,
                           seq_len=256)
    return Workload(model=m, gpu=gpus.gpu("a100-80gb"), **changes)


def test_matmul_time_is_flops_over_shape_discounted_peak():
    eff = efficiency.Efficiency(matmul=0.5, width=1024.0)
    w = gpt(precision="bf16", micro_batch=4)
    # 2·M·K·N over 312 TFLOP/s × 0.5 × (1024/2048) · (4096/5120) · (1024/2048)
    expected = 2 * 1024 * 1024 * 4096 / (312e12 * 0.5 * 0.5 * 0.8 * 0.5)
    assert compute.gemm_seconds(Gemm(1024, 4096), 1024, w, eff) == pytest.approx(expected)


def test_ddp_all_reduce_moves_twice_the_gradients_over_nvlink():
    eff = efficiency.Efficiency(network=0.5)
    w = gpt(strategy="ddp", gpus_per_node=4)
    grads = w.params * 4  # fp32 gradients
    assert comms.ring_seconds(grads, w, eff, all_reduce=True) == pytest.approx(2 * grads * 3 / 4 / (300e9 * 0.5))
    across = gpt(strategy="ddp", gpus_per_node=8, nodes=2)  # 8 × 25 GB/s of NICs per node is below NVLink's 300
    assert comms.bus_bandwidth(across, eff) == pytest.approx(8 * 25e9 * 0.5)


def test_on_a_cpu_gloo_collectives_run_at_their_measured_rates_and_hide_behind_nothing():
    """A CPU's ranks run the collectives on the cores that compute, so nothing overlaps; gloo's all-reduce and its
    all-gather / reduce-scatter run at the bus bandwidths `calibrate` measured."""
    eff = efficiency.Efficiency(network=1.0, peak_flops=1e11, memory_bandwidth=5e9, allreduce_bandwidth=1e9,
                                gather_bandwidth=0.25e9)
    m = config.ModelConfig(name="t", family="gpt_neox", hidden_size=128, num_layers=2, num_heads=4, vocab_size=1000,
                           seq_len=64)
    cpu = gpus.gpu("cpu")
    ddp = Workload(model=m, gpu=cpu, gpus_per_node=2, strategy="ddp", precision="fp32", grad_accum=2)
    assert comms.per_step(ddp, eff).backward_s == pytest.approx(ddp.params * 4 / 1e9 + comms.LATENCY_S)
    fsdp = ddp.with_(strategy="fsdp")
    c = comms.per_step(fsdp, eff)  # gather for forward and backward, reduce-scatter: 3 × half the states each
    assert c.per_micro_batch_s == pytest.approx(3 * fsdp.params * 4 / 2 / 0.25e9 + 6 * comms.LATENCY_S)
    step = records.predict_step(fsdp, eff)
    assert step.comm_exposed_s == pytest.approx(2 * c.per_micro_batch_s)  # every micro-batch's, in full
    gpu = records.predict_step(fsdp.with_(gpu=gpus.gpu("a100-80gb")), efficiency.Efficiency())
    assert gpu.comm_exposed_s < 2 * comms.per_step(gpu.workload, efficiency.Efficiency()).per_micro_batch_s


def test_model_states_follow_the_zero_paper():
    p = gpt().params
    assert memory.state_bytes(gpt(strategy="ddp", gpus_per_node=2, fused_adamw=True)) == p * (16 + 2 + 4)
    assert memory.state_bytes(gpt(strategy="fsdp", gpus_per_node=4, fused_adamw=True)) == p * 16 / 4
    zero2 = gpt(strategy="zero2", gpus_per_node=4, fused_adamw=True)
    assert memory.state_bytes(zero2) == p * 2 + p * 2 / 4 + p * 12 / 4 + 2 * p * 2  # weights, grads, optimizer, buckets


def test_activations_per_token_follow_korthikanti_without_dropout():
    h = 1024
    # GPT-2, mixed precision, fused attention: 2 fp32 residual inputs + at 2 bytes the 2 norm outputs, the fused QKV
    # buffer (3h) and the attention output, and GPT-2's written-out tanh GELU (5 tensors of 4h) + 4-byte
    # log-sum-exp per head
    flash = gpt(attention="sdpa")
    assert memory.block_bytes_per_token(flash) == 2 * 4 * h + 2 * (2 * h + 3 * h + h + 5 * 4 * h) + 16 * 4
    eager = gpt(attention="eager")  # + the fp32 softmax output and its 2-byte copy per head and key
    assert memory.block_bytes_per_token(eager) - memory.block_bytes_per_token(flash) == 16 * 256 * 6 - 16 * 4
    full = memory.activation_bytes(gpt(ac_every=1, micro_batch=2))
    assert full == 4 * 2 * 256 * h * 4 + memory.block_bytes_per_token(gpt()) * 2 * 256  # inputs + one rebuilt block


def test_largest_micro_batch_is_the_last_that_fits():
    w = gpt(precision="bf16", micro_batch=1)
    best = memory.largest_micro_batch(w, memory_gib=4)
    assert memory.peak(w.with_(micro_batch=best)).total <= 4 * GIB < memory.peak(w.with_(micro_batch=best + 1)).total


def test_reference_check_clears_the_bar_and_the_constant_mfu_baseline():
    checked, skipped = reference.check(reference.read_rows(REFERENCE / "published_throughput.csv"))
    lines = reference.report(checked, skipped)
    found = re.fullmatch(r"predict-check: (\d+) rows, median abs error ([\d.]+) %, p90 ([\d.]+) %", lines[-1])
    assert found and int(found[1]) >= 140
    assert float(found[2]) <= 6 and float(found[3]) <= 15
    for line in lines:  # every source: our median below the constant-MFU baseline's
        if line.startswith("source "):
            ours, base = map(float, line.split(", ")[2].split(" / "))
            assert ours < base, line
    reasons = {why for _, why in skipped}
    assert any("TP" in r for r in reasons) and any("FP8" in r for r in reasons)


def test_rows_it_cannot_express_say_why():
    row = dict.fromkeys(["tokens_per_s_per_gpu", "precision", "framework", "model", "ep", "gpu_type", "tp", "pp",
                         "cp", "parallelism", "num_gpus"], "")
    row.update(tokens_per_s_per_gpu="100", gpu_type="MI300X", model="x")
    assert reference.express(row) == (None, "GPU 'MI300X' not in the catalogue")


def test_rows_from_other_sources_are_read_from_their_own_words():
    row = {"tokens_per_s_per_gpu": "1000", "gpu_type": "A100-SXM4-80GB", "num_gpus": "16", "model": "x",
           "parallelism": "DeepSpeed ZeRO stage 2 with CPU offload", "precision": "fp32 (TF32 matmuls)",
           "framework": "Megatron-DeepSpeed, eager attention", "n_layers": "24", "d_model": "2048", "n_heads": "16",
           "vocab": "50257", "seq_len": "2048", "global_batch_seqs": "512", "grad_accum": "4"}
    w, why = reference.express(row)
    assert why == "" and (w.strategy, w.precision, w.tf32, w.attention) == ("zero2-offload", "fp32", True, "eager")
    assert (w.micro_batch, w.grad_accum, w.gpus_per_node, w.nodes) == (8, 4, 8, 2)  # 512 / (16 × 4)
    assert reference.express({**row, "global_batch_seqs": ""}) == (None, "micro-batch not given")


def test_memory_check_finds_the_largest_batch_within_15_percent():
    lines = memcheck.report(REFERENCE / "languini_batch_sweep.csv")
    found = re.fullmatch(r"memory-check: (\d+) configs, largest batch within 15 % on (\d+) %", lines[-1])
    assert found and int(found[1]) == 11 and int(found[2]) >= 80


def test_predict_prints_time_memory_days_and_cost(capsys):
    assert cli.main(["predict", "model=pythia-160m", "hardware=8xa100", "strategy=fsdp", "tricks=free-lunch",
                     "micro_batch=16"]) == 0
    out = capsys.readouterr().out
    assert "MFU" in out and "fits" in out and "GPU-days" in out and "cloud $" in out


def test_predict_all_methods_ranks_them_fastest_first(capsys):
    assert cli.main(["predict", "model=pythia-160m", "hardware=2xa100", "methods=all"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if re.match(r"\| \d+ \|", line)]
    fitting = [float(r[3]) for r in rows if r[6] == "yes"]
    assert len(rows) == 8 * 4 + 8 * 2 and fitting == sorted(fitting)


def test_bad_input_names_the_key(capsys):
    assert cli.main(["predict", "model=pythia-160m", "methods=some"]) == 2
    assert "`methods`" in capsys.readouterr().err
    assert cli.main(["plan", "model=pythia-160m", "gpus=[h1000]"]) == 2
    assert "`gpus`" in capsys.readouterr().err


def test_plan_covers_every_layout_and_draws_days_against_cost(tmp_path, capsys):
    assert cli.main(["plan", "model=pythia-410m", "gpus=[h100,rtx4090]", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("| h100 |") == len(plan.LAYOUTS) and (tmp_path / "plan-pythia-410m.png").stat().st_size > 10_000
    cfg = config.compose(["model=pythia-410m", "hardware=1xh100"])
    rows = {(k, n * m): a for k, n, m, a in plan.plan(from_config(cfg), "bf16", 1000, ["h100"])}
    assert 6 < rows["h100", 1].days / rows["h100", 8].days <= 8.5  # data parallelism: close to linear


def measured(cfg: config.BenchConfig, step_s: float) -> dict:
    env = {**record.library_versions(), "gpu_sku": cfg.hardware.gpu, "device_name": "test"}
    m = {"step_s": [step_s] * 5, "legacy_step_s": [step_s] * 5, "first_step_s": step_s, "setup_s": 1.0,
         "timed_wall_s": 5 * step_s, "losses": [10.9], "grad_norms": [1.0], "skipped_steps": 0,
         "peak_mem_bytes": GIB, "mem_kind": "cuda_max_allocated"}
    return record.make_record(cfg, record.cell_key(cfg, env, cfg.hardware.gpu), "ok", None, m, env)


def test_calibration_fits_the_gpu_and_flags_a_record_far_off(tmp_path):
    store = Store(tmp_path)
    cfgs = [config.compose(["model=pythia-160m", "hardware=1xh100", "tricks=free-lunch", f"micro_batch={mb}"])
            for mb in (1, 2, 4, 8)]
    eff = efficiency.for_gpu(gpus.gpu("h100"))
    for cfg in cfgs:  # this "GPU" runs 1.5× slower than the published fit says
        store.append(measured(cfg, 1.5 * records.predict_step(from_config(cfg), eff).step_s))
    assert records.beside(store.records()[0])["ratio"] == pytest.approx(1.5)
    assert cli.main(["calibrate", "--store", str(tmp_path), "--gpu", "h100"]) == 0
    after = records.beside(store.records()[0], tmp_path)
    assert after["calibrated"] and after["ratio"] == pytest.approx(1.0, abs=0.05) and not after["flagged"]
    from pretrain_bench.analysis import report

    moved = shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-moved")  # a store read from elsewhere
    assert "uncal." not in report.table(Store(moved).records(), store_dir=str(moved))
    assert "uncal." in report.table(Store(moved).records(), store_dir=str(moved / "nothing-here"))
    store.append(measured(config.compose(["model=pythia-410m", "hardware=1xh100", "tricks=free-lunch"]), 100.0))
    assert records.beside(store.records()[-1], tmp_path)["flagged"]


@pytest.mark.distributed
def test_calibrating_a_cpu_measures_it_first(tmp_path, capsys):
    """`calibrate --gpu cpu` measures what a CPU has no datasheet for (matmul FLOP/s, the memory-bound kernels' rate,
    gloo's collectives between 2 processes) and fits the rest on the store's CPU records."""
    store = Store(tmp_path)
    for mb, step_s in ((2, 1.0), (4, 1.6)):
        store.append(measured(config.compose(["model=tiny", "hardware=cpu-2", "strategy=ddp", f"micro_batch={mb}"]),
                              step_s))
    assert cli.main(["calibrate", "--store", str(tmp_path), "--gpu", "cpu"]) == 0
    assert "cpu micro-benchmarks:" in capsys.readouterr().out
    eff = efficiency.for_gpu(gpus.gpu("cpu"), tmp_path)
    assert eff.peak_flops > 1e9 and eff.memory_bandwidth > 1e8
    assert eff.allreduce_bandwidth > 1e7 and eff.gather_bandwidth > 1e7
    assert all(records.beside(r, tmp_path)["calibrated"] for r in store.records())


def test_the_model_runs_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from pretrain_bench.analysis.perf import reference, memcheck, plan, records\n"
            "from pretrain_bench.spec import gpus\n"
            f"c, s = reference.check(reference.read_rows({str(REFERENCE / 'published_throughput.csv')!r}))\n"
            "print(reference.report(c, s)[-1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("predict-check:")


def test_search_starts_at_the_predicted_size_and_prunes_the_predicted_slow():
    from test_search import BASE, FakeRunner

    from pretrain_bench.bench import search

    base = search.base_config(BASE)
    kept, pruned = search.candidates(base, "free-lunch", ["ddp", "zero2", "zero3-offload"])
    limits = {(s, ac, every, flce): 16 for s in ("ddp", "zero2", "zero3-offload") for ac, every, flce in search.RUNGS}
    runner = FakeRunner(limits, dict.fromkeys(limits, 1.0), rungs=True)
    searcher = search.Search(runner, BASE, base, prune="predicted")
    kept, slow = searcher.predicted(kept)
    assert all(o.reason.startswith("R9") for o in slow) and all(g.micro_batch == 16 for g in searcher.guesses.values())
    result = searcher.run(kept, pruned + slow)
    measured = [o for o in result.outcomes if o.status == "measured"]
    assert measured and all(o.probes == 1 for o in measured)  # the predicted size is the largest: one probe
    with pytest.raises(config.ConfigError, match="search.prune"):
        search.Search(runner, BASE, base, prune="some")


def test_a_cpu_memory_budget_gives_a_predicted_largest_micro_batch():
    """Without a budget a CPU's memory is unlimited and an uncalibrated CPU gets no guess; with hardware.memory_gib
    the model predicts the largest fitting size (no step time before `calibrate`), with no CUDA context counted."""
    from pretrain_bench.analysis.perf import guide

    cell = ["model=pythia-14m", "model.seq_len=128", "hardware=cpu-2", "strategy=ddp", "model.global_batch=16"]
    sizes = [1, 2, 4, 8]
    assert guide.guess(config.compose(cell), sizes) is None
    cfg = config.compose([*cell, "hardware.memory_gib=0.8"])
    w = from_config(cfg)
    assert w.gpu.memory_gib == 0.8 and memory.capacity(w) == 0.8 * GIB
    assert memory.peak(w).overhead == 0 and memory.peak(gpt()).overhead == memory.CONTEXT_BYTES
    largest = memory.largest_micro_batch(w)
    assert memory.peak(w.with_(micro_batch=largest)).total <= 0.8 * GIB < memory.peak(w.with_(
        micro_batch=largest + 1)).total
    assert guide.guess(cfg, sizes) == guide.Guess(4, None)  # 8 would need about 1.1 GiB
    assert guide.beyond_margin({"ddp": guide.guess(cfg, sizes)}) == {}  # no step time: nothing pruned
    on_cpu = w.with_(strategy="zero2")  # offload moves states to the host: a CPU process's own memory
    assert memory.state_bytes(on_cpu.with_(strategy="zero2-offload")) == memory.state_bytes(on_cpu)
    assert record.cell(cfg)["memory_gib"] == 0.8 and "memory_gib" not in record.cell(config.compose(cell))
    assert record.cell_key(cfg, {}, "cpu") != record.cell_key(config.compose(cell), {}, "cpu")


def test_a_wrong_guess_costs_one_more_probe():
    from test_search import BASE, FakeRunner

    from pretrain_bench.bench import search

    base = search.base_config(BASE)
    ddp = search.Method("ddp", "free-lunch", False, 1, False, "gpt_neox")
    runner = FakeRunner({("ddp", False): 4}, {("ddp", False): 1.0})
    searcher = search.Search(runner, BASE, base)
    sizes = search.micro_batches(base)  # 1, 2, 4, 8, 16
    assert searcher.largest_fitting(ddp, sizes, 0, guess=4)[:2] == (4, 2)  # 4 fits, 8 does not
    assert searcher.largest_fitting(ddp, sizes, 0, guess=8)[:2] == (4, 2)  # 8 does not, 4 fits


def test_records_carry_the_prediction_and_the_table_shows_the_ratio(tmp_path):
    from pretrain_bench.analysis import report

    cfg = config.compose(["model=pythia-160m", "hardware=1xh100", "tricks=free-lunch", f"store={tmp_path}"])
    predicted = records.predict_step(from_config(cfg), efficiency.for_gpu(gpus.gpu("h100"))).step_s
    r = measured(cfg, 2 * predicted)
    assert r["prediction"]["ratio"] == pytest.approx(2.0) and not r["prediction"]["flagged"]  # not calibrated
    assert "2.00 (uncal.)" in report.table([r])


def test_reproduce_puts_our_predicted_days_beside_each_claim():
    from pretrain_bench.analysis import reproduce

    claims = {c.id: c for c in reproduce.load_claims(REFERENCE / "claims.csv")}
    p = reproduce.predicted(claims["kh24-1b-4xh100"])
    assert p.low < p.days < p.high and p.method
    line = next(x for x in reproduce.render([(reproduce.assess(claims["kh24-1b-4xh100"]), None)]).splitlines()
                if x.startswith("| kh24"))
    assert f"{p.days:.1f} d" in line and f"{p.days / 8:.2f}× faster than predicted" in line


def test_where_memory_binds_the_prediction_saves_probes_and_keeps_the_winner():
    """pythia-1b on one A100 40GB (per-device batch 1024, memory binds): a runner whose memory limits and speeds are
    the model's own finds the same best method with fewer probes and full measurements when guided."""
    from test_search import FakeRunner

    from pretrain_bench.bench import search

    overrides = ["model=pythia-1b", "hardware=1xa100-40gb"]
    base = search.base_config(overrides)
    kept, pruned = search.candidates(base, "free-lunch")
    guides = search.Search(None, overrides, base, prune="predicted")
    guides.predicted(kept)
    key = {m: (m.strategy, m.ac, m.ac_every, m.flce) for m in kept}
    limits = {key[m]: g.micro_batch for m, g in guides.guesses.items()}
    speeds = {key[m]: 1 / (g.step_s * g.micro_batch) for m, g in guides.guesses.items()}
    outcomes = {}
    for mode in ("rules", "predicted"):
        runner = FakeRunner(limits, speeds, rungs=True)
        searcher = search.Search(runner, overrides, base, prune=mode)
        todo, slow = searcher.predicted(kept)
        result = searcher.run(todo, pruned + slow)
        outcomes[mode] = (result.best.method, [c[0] for c in runner.calls])
    assert outcomes["predicted"][0] == outcomes["rules"][0]
    calls = {mode: (kinds.count("probe"), kinds.count("throughput")) for mode, (_, kinds) in outcomes.items()}
    assert calls["predicted"][0] < calls["rules"][0] and calls["predicted"][1] <= calls["rules"][1]
