"""The first hour on a cluster: `make setup` follows its settings, a CUDA-less torch is diagnosed with what torch and
the driver say, and a non-editable install (what `pip install .` and `pip install git+…` build) carries the configs
and reference data and runs a cell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pretrain_bench import config
from pretrain_bench.bench import probe

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str, venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(ROOT), *args, f"VENV={venv}"], capture_output=True, text=True)


def test_setup_reruns_when_its_settings_change(tmp_path):
    venv = tmp_path / "venv"
    plan = make("-n", "setup", venv=venv).stdout
    [stamp] = re.findall(r"> (\S+/\.installed-\d+)", plan)
    Path(stamp).parent.mkdir(parents=True)
    Path(stamp).touch()
    assert make("-q", "setup", venv=venv).returncode == 0  # done: nothing to do
    for change in ("TORCH=torch==2.11.0", "EXTRAS=dev,fp8", "PYTHON=python3.12",
                   "TORCH_INDEX=https://download.pytorch.org/whl/cu126"):
        assert make("-q", "setup", change, venv=venv).returncode == 1, change  # out of date: set-up runs again
    cuda = make("-n", "setup", "TORCH=torch==2.11.0", "TORCH_INDEX=https://download.pytorch.org/whl/cu126",
                "PYTHON=python3.12", venv=venv).stdout
    assert 'pip install -q --index-url https://download.pytorch.org/whl/cu126 "torch==2.11.0"' in cuda
    assert "python3.12 -m venv --clear" in cuda


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that reports two A100s behind an R470 driver."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\nfor i in 0 1; do echo '470.82.01, NVIDIA A100-SXM4-80GB'; done\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")


def test_no_gpu_says_what_torch_and_the_driver_report(fake_nvidia_smi, capsys):
    from pretrain_bench import cli

    assert cli.main(["run", "hardware=2xa100", "strategy=ddp", "--print-config"]) == 0  # nothing asked of the GPU
    assert cli.main(["run", "hardware=2xa100", "strategy=ddp"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    torch_version = __import__("torch").__version__
    assert f"2xa100 needs 2 CUDA GPUs, this machine shows 0 to torch (torch {torch_version} built without CUDA" in err
    assert "driver 470.82.01, nvidia-smi lists 2 GPU(s): NVIDIA A100-SXM4-80GB" in err
    assert "CUDA says: AssertionError: Torch not compiled with CUDA enabled" in err
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cu118" in err


@pytest.mark.parametrize("driver, index", [("580.95.05", "cu130"), ("550.54.15", "cu126"), ("535.104.05", "cu126"),
                                           ("470.82.01", "cu118")])
def test_advice_follows_the_driver(driver, index):
    assert f"TORCH_INDEX=https://download.pytorch.org/whl/{index}" in probe.advice(driver)


def test_a_driver_too_old_for_torchs_cuda_is_named():
    torch_says = {"torch": "2.11.0+cu130", "cuda": "13.0", "count": 0, "name": "",
                  "error": "RuntimeError: The NVIDIA driver on your system is too old (found version 12020)."}
    text = probe.diagnosis(torch_says, {"driver": "535.104.05", "names": ["NVIDIA A100-SXM4-40GB"], "error": None})
    assert text.startswith("torch 2.11.0+cu130 built for CUDA 13.0; driver 535.104.05")
    assert "too old (found version 12020)" in text and "whl/cu126" in text
    assert "no nvidia-smi on PATH" in probe.diagnosis(torch_says, None)


def _source_copy(dest: Path) -> Path:
    """What a clone holds (pip builds `git+…` from one), without this checkout's build leftovers."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_non_editable_install_finds_its_configs_and_runs_a_cell(tmp_path):
    """`pip install .` into a fresh venv (offline: this interpreter's packages stand in for the dependencies), then
    the installed command from another directory, with no source tree on the path."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # its .pth files (editables) are not read
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PRETRAIN_BENCH_CONFIGS")}
    source = _source_copy(tmp_path / "clone")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", str(source)], check=True, env=env, cwd=tmp_path)
    shutil.rmtree(source)  # nothing may still point into the source tree

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "pretrain-bench", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    where = subprocess.run([venv / "bin" / "python", "-c", "import pretrain_bench.config as c; print(c.CONFIG_DIR)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path).stdout.strip()
    assert Path(where) == site / "pretrain_bench" / "configs"
    assert bench("--version").stdout.strip() == "pretrain-bench 0.1.0"
    listed = bench("list", "models")
    assert listed.returncode == 0 and "pythia-1b      gpt_neox, 1.0B parameters" in listed.stdout
    printed = bench("run", "model=pythia-160m", "hardware=1xa100", "--print-config")
    assert printed.returncode == 0 and "hidden_size: 768" in printed.stdout
    claims = bench("reproduce", "--store", str(tmp_path / "empty"))
    assert claims.returncode == 0 and "kh24-1b-4xh100" in claims.stdout  # the shipped reference data
    done = bench("run", "model=tiny", "hardware=cpu-1", "steps=5", "warmup_steps=1", f"store={tmp_path / 'store'}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok] tiny on cpu-1" in done.stdout


def test_a_checkout_reads_the_top_level_configs():
    assert config.shipped("configs", "configs") == ROOT / "configs"  # source tree and editable install alike
    assert config.shipped("reference", "results/reference") == ROOT / "results" / "reference"
