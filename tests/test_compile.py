"""torch.compile really runs (Inductor's C++ backend on CPU) under every backend and trains like eager.

bf16 autocast on CPU; Inductor fuses elementwise work and may keep intermediates in fp32 where eager rounds them to
bf16, so compiled and eager losses differ by rounding only: ~1e-5 relative over these steps (a wrong graph, a
dropped gradient or a stale recompiled one moves them by percents). Compiling costs tens of seconds per distinct
graph on CPU (Inductor's on-disk cache makes repeats cheaper), hence the tiniest model, short sequences, and every
2-process cell in one launch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain_bench import config
from pretrain_bench.analysis import record, report
from pretrain_bench.bench import launch
from pretrain_bench.train import loop, measurement, strategies, synthetic, tricks
from pretrain_bench.train.strategies.base import Runtime

# micro-batch 4 × 32 positions everywhere: the same block graphs in every test, which Inductor's on-disk cache then
# compiles once (at 2 × 32 the CPU backend's C++ for a bf16 reduction in the block's backward does not compile)
COMMON = ["model=tiny", "model.seq_len=32", "model.global_batch=16", "steps=5", "warmup_steps=1", "seed=3"]
RTOL = 1e-3


def train_single(cfg: config.BenchConfig) -> tuple[list[float], dict]:
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    rt = Runtime(device=torch.device("cpu"), rank=0, local_rank=0, world=1)
    tricks.apply_process_settings(cfg)
    torch.manual_seed(cfg.seed)
    strategy = strategies.create(cfg, rt)
    model = strategy.wrap(tricks.build_model(cfg, compile_blocks=strategy.compiles_blocks))
    logs = loop.train(model, strategy, synthetic.synthetic(cfg.model, cfg.seed, rt.device), rt, cfg.micro_batch, 6)
    return [log.loss for log in logs], measurement.compile_counters()


@pytest.mark.slow  # Inductor compiles in this process: about a minute, too long for the fast tier
def test_compiled_single_process_training_matches_eager():
    """free-lunch with checkpointing and the fused linear-CE head in one run: each compile costs about a minute."""
    base = [*COMMON, "hardware=cpu-1", "strategy=single", "micro_batch=4", "tricks=free-lunch-ac",
            "tricks.fused_linear_ce=true"]
    eager, _ = train_single(config.compose([*base, "tricks.compile=false"]))
    compiled, counts = train_single(config.compose(base))
    assert compiled == pytest.approx(eager, rel=RTOL)
    assert counts["graphs"] >= 1  # Inductor compiled something: this is not eager by another name
    assert counts["graph_breaks"] == 0 and counts["recompiles"] == 0


@pytest.mark.distributed
def test_compiled_ddp_fsdp_and_zero2_match_eager(tmp_path):
    """One 2-process launch: DDP (with fused linear-CE), FSDP2 (with activation checkpointing) and ZeRO-2 (the engine
    compiles the whole model), each eager and compiled. Same shapes as the single-process test, so Inductor's
    on-disk cache serves the per-block graphs compiled there."""
    # FSDP2 and ZeRO-2 in fp32: both compute with bf16 weights under bf16 (FSDP2's MixedPrecisionPolicy, DeepSpeed's
    # bf16 mode), and on CPU Inductor's C++ for the bf16 reductions of their backward does not compile (torch 2.13:
    # "conflicting declaration of at_BFloat16_tmp_acc0_vec"); DDP keeps fp32 weights under bf16 autocast
    cases = {"ddp": ("ddp", "free-lunch-flce", []), "fsdp": ("fsdp", "free-lunch-ac", ["tricks.precision=fp32"]),
             "zero2": ("zero2", "free-lunch", ["tricks.precision=fp32"])}
    cells = []
    for name, (strategy, trick_set, extra) in cases.items():
        base = [*COMMON, "hardware=cpu-2", f"strategy={strategy}", "micro_batch=4", f"tricks={trick_set}", *extra]
        cells += [{"name": f"{name}-eager", "config": config.to_dict(config.compose([*base, "tricks.compile=false"]))},
                  {"name": name, "config": config.to_dict(config.compose(base))}]
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    cfg = config.compose([*COMMON, "hardware=cpu-2", "strategy=ddp"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(Path(__file__).with_name("compile_ranks.py")), str(tmp_path / "cells.json"),
               str(tmp_path / "out.json")]
    done = subprocess.run(command, env=launch.worker_env(cfg), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "out.json").read_text())
    for name in cases:
        assert results[name]["losses"] == pytest.approx(results[f"{name}-eager"]["losses"], rel=RTOL), name
        assert results[name]["compile"]["graphs"] >= 1, name
        assert results[f"{name}-eager"]["compile"]["graphs"] == 0


def test_a_compiled_record_with_graph_breaks_says_so_in_the_table():
    cfg = config.compose(["model=pythia-1b", "hardware=1xh100", "tricks=free-lunch", "micro_batch=8"])
    env = {**record.library_versions(), "gpu_sku": "h100"}
    m = {"step_s": [30.0] * 5, "first_step_s": 90.0, "setup_s": 5.0, "timed_wall_s": 150.0, "losses": [10.0],
         "grad_norms": [1.0], "skipped_steps": 0, "peak_mem_bytes": 2**30, "mem_kind": "cuda_max_allocated",
         "compile": {"graphs": 3, "graph_breaks": 2, "recompiles": 1, "break_reasons": ["print"]}}
    r = record.make_record(cfg, "k", "ok", None, m, env)
    assert r["compile"]["graph_breaks"] == 2
    assert "ok (2 graph breaks, 1 recompile)" in report.table([r])
    clean = record.make_record(cfg, "k", "ok", None, {**m, "compile": {**m["compile"], "graph_breaks": 0,
                                                                          "recompiles": 0}}, env)
    assert "| ok |" in report.table([clean])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_compile_modes_accumulate_gradients_like_eager(mode):
    """The evidence validation waits for before it allows the CUDA-graph modes with gradient accumulation: per-block
    compile in `mode`, 4 micro-batches summed into `.grad`, gradients equal to eager's (bf16 autocast tolerance)."""
    cfg = config.compose(["model=tiny", "hardware=1xh100", "tricks=free-lunch", "model.global_batch=16",
                          "micro_batch=4"])

    def grads(compiled: bool) -> list[torch.Tensor]:
        torch._dynamo.reset()
        torch.manual_seed(0)
        from pretrain_bench.spec import models

        model = models.build_model(cfg.model, attention="sdpa").cuda()
        if compiled:
            for block in models.blocks(model, cfg.model):
                block.compile(mode=mode)
        data = synthetic.synthetic(cfg.model, cfg.seed, torch.device("cuda"))
        for _ in range(2):  # the second step replays the recorded graphs
            model.zero_grad(set_to_none=False)
            for batch in data.micro_batches(0, 0, 1, cfg.micro_batch):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    (model(**synthetic.as_inputs(batch)).loss / 4).backward()
        return [p.grad.float().clone() for p in model.parameters()]

    for eager, compiled in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=1e-4)
