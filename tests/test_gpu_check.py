"""The GPU check (`scripts/gpu_check.sh`): its plan covers every CUDA path and fits 10 minutes on every GPU of the
catalogue, it finds the GPU with nvidia-smi, and it records a failed step and goes on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pretrain_bench.bench import gpu_check
from pretrain_bench.spec import gpus

ROOT = Path(__file__).resolve().parents[1]
GPUS = gpu_check.checkable()


@pytest.mark.parametrize("sku", GPUS)
def test_plan_fits_ten_minutes_and_covers_every_path(sku, tmp_path):
    hardware, extra = gpu_check.hardware_for(sku, tmp_path, write=False)
    steps = gpu_check.plan(sku, hardware, str(tmp_path))
    assert sum(s.expected_s for s in steps) <= gpu_check.BUDGET_S
    names = [s.name for s in steps]
    assert names[:1] == ["free-lunch"] and {"sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "fused-ce", "checkpointing",
                                            "fsdp", "zero3", "profile"} <= set(names)
    assert names[-3:] == ["core-pythia-160m", "core-pythia-1b", "peers-pythia-160m"]
    assert ("fp8" in names) == ("fp8" in gpus.gpu(sku).peak_flops)
    assert all(s.timeout_s >= 2 * s.expected_s for s in steps)  # generous: the estimate is a guess
    if not gpus.gpu(sku).supports_bf16:
        assert all("tricks.precision=fp16" in s.args for s in steps)


def test_every_planned_command_is_a_valid_config(tmp_path, capsys):
    """What the check runs composes and validates here already (no GPU needed for --print-config)."""
    from pretrain_bench import cli

    hardware, extra = gpu_check.hardware_for("h100", tmp_path, write=True)
    for step in gpu_check.plan("h100", hardware, str(tmp_path)):
        if step.name == "fp8":  # needs torchao, which the CPU stack lacks: the check records it as refused
            continue
        assert cli.main([*extra, *step.args, "--print-config"]) == 0, (step.name, capsys.readouterr().err)


def script(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([ROOT / "scripts" / "gpu_check.sh", *args], capture_output=True, text=True, env=env)


def test_dry_run_detects_the_gpu_with_nvidia_smi(tmp_path):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '535.104.05, NVIDIA L40S'\n")
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{smi.parent}:{os.environ['PATH']}", "PYTHON": os.sys.executable,
           "OUT": str(tmp_path / "out")}
    done = script("--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    head = done.stdout.splitlines()[0]
    assert head.startswith("GPU check for L40S 48GB (l40s) as hardware=1xl40s: 13 steps, expected ")
    assert f"output: {tmp_path / 'out' / 'results' / 'l40s'}" in head
    assert "--config-dir" in done.stdout  # no 1×L40S layout ships: the check brings its own
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert script("--dry-run", "--gpu", "tpu-v5", env=env).returncode == 2


def test_a_failed_step_is_recorded_and_the_check_goes_on(tmp_path, monkeypatch, capsys):
    steps = [gpu_check.Step("bad", "a refused config", ("run", "model=nope"), 5.0),
             gpu_check.Step("good", "a command that works", ("list", "gpus"), 5.0),
             gpu_check.Step("late", "more than the budget left", ("list",), 10_000.0)]
    monkeypatch.setattr(gpu_check, "plan", lambda sku, hardware, store: steps)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.main(["--gpu", "a100-80gb", "--budget-s", "120"]) == 3
    out = tmp_path / "results" / "a100-80gb"
    results = {r["step"]: r for r in json.loads((out / "gpu_check.json").read_text())["results"]}
    assert results["bad"]["status"] == "refused (bad input)" and "model/nope" in results["bad"]["tail"]
    assert results["good"]["status"] == "ok" and results["late"]["status"] == "skipped (budget spent)"
    assert "h100" in (out / "gpu_check_logs" / "good.txt").read_text()
    summary = (out / "gpu_check.md").read_text()
    assert "1 of 3 steps ok" in summary and "| bad | refused (bad input) |" in summary
    assert f"summary: {out / 'gpu_check.md'}" in capsys.readouterr().out
