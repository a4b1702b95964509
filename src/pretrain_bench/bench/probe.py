"""Which GPUs this machine has, asked before any worker starts, and what to do when torch sees none.

The question goes to torch in a subprocess, so that the launching process never creates a CUDA context (which would
hold GPU memory). When the config expects GPUs and torch shows fewer, the error says what torch and the driver report
(torch's CUDA build, the driver's version from nvidia-smi, CUDA's own error text) and which torch build to install:
the usual cause on a cluster is a torch built for a newer CUDA than the node's driver supports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from pretrain_bench.config import BenchConfig, ConfigError
from pretrain_bench.spec import gpus

_ASK_TORCH = """
import json, torch
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "count": 0, "name": "", "error": None}
try:
    torch.cuda.init()
    out["count"] = torch.cuda.device_count()
    out["name"] = torch.cuda.get_device_name(0) if out["count"] else ""
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""
# Oldest driver for each CUDA major version of torch's wheels (CUDA's minor-version compatibility), newest first,
# with the wheel index that serves such a build: the advice when torch's CUDA is newer than the driver.
DRIVER_FLOORS = ((580, "13", "https://download.pytorch.org/whl/cu130"),
                 (525, "12", "https://download.pytorch.org/whl/cu126"),
                 (450, "11", "https://download.pytorch.org/whl/cu118"))


def ask_torch() -> dict:
    """torch's own answer: version, CUDA build, device count and first device name, or CUDA's error text."""
    done = subprocess.run([sys.executable, "-c", _ASK_TORCH], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"torch": None, "cuda": None, "count": 0, "name": "", "error": f"importing torch failed: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ask_driver() -> dict | None:
    """nvidia-smi's answer (driver version, GPU names), or None without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run([smi, "--query-gpu=driver_version,name", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=60)
    rows = [[part.strip() for part in line.split(",", 1)] for line in done.stdout.splitlines() if "," in line]
    if done.returncode != 0 or not rows:
        return {"driver": None, "names": [], "error": (done.stderr or done.stdout).strip()}
    return {"driver": rows[0][0], "names": [name for _, name in rows], "error": None}


def advice(driver: str | None) -> str:
    """Which torch build this driver runs: the newest CUDA major version whose oldest driver it meets."""
    try:
        major = int(driver.split(".")[0]) if driver else None
    except ValueError:
        major = None
    if major is None:
        return ("check that the NVIDIA driver works (nvidia-smi), then install a torch built for a CUDA version the "
                "driver supports (the \"CUDA Version\" nvidia-smi prints): make setup TORCH_INDEX=…")
    for floor, cuda, index in DRIVER_FLOORS:
        if major >= floor:
            older = "" if cuda != "11" else " TORCH='torch==2.7.1'"
            return (f"driver {driver} runs torch builds for CUDA {cuda}.x: make setup{older} TORCH_INDEX={index} "
                    f"(README, Install)")
    return f"driver {driver} is older than any CUDA build of torch ≥ 2.6 supports (R{DRIVER_FLOORS[-1][0]}): update it"


def diagnosis(torch_says: dict, driver_says: dict | None) -> str:
    cuda = torch_says["cuda"]
    build = f"torch {torch_says['torch']} " + (f"built for CUDA {cuda}" if cuda else "built without CUDA (a CPU build)")
    if driver_says is None:
        driver = "no nvidia-smi on PATH"
    elif driver_says["driver"] is None:
        driver = f"nvidia-smi failed: {driver_says['error']}"
    else:
        driver = f"driver {driver_says['driver']}, nvidia-smi lists {len(driver_says['names'])} GPU(s): " + \
            ", ".join(sorted(set(driver_says["names"])))
    error = f"; CUDA says: {torch_says['error']}" if torch_says["error"] else ""
    fix = advice(driver_says and driver_says["driver"])
    return f"{build}; {driver}{error}. To fix: {fix}"


def detect_gpu(cfg: BenchConfig) -> str:
    """The catalogue key of this machine's GPU, checked against the config before any worker starts."""
    hw = cfg.hardware
    if hw.gpu == "cpu":
        return "cpu"
    if hw.nodes > 1 and cfg.multinode == "srun" and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError("hardware.nodes", f"{hw.name} spans {hw.nodes} nodes: run it inside a SLURM allocation of "
                                            f"{hw.nodes} nodes (`pretrain-bench sweep … hydra/launcher=slurm`); "
                                            "allowed here: single-node hardware")
    torch_says = ask_torch()
    count, name = torch_says["count"], torch_says["name"]
    if count < hw.gpus_per_node:
        raise ConfigError("hardware", f"{hw.name} needs {hw.gpus_per_node} CUDA GPUs, this machine shows {count} to "
                                      f"torch ({diagnosis(torch_says, ask_driver())}); allowed here: cpu-1, cpu-2"
                                      + (f", or up to {count}x GPUs" if count else ""))
    sku = gpus.identify(name)
    if hw.gpu == "unknown":
        print(f"pretrain-bench: warning: running {name!r} as an unknown GPU"
              f"{f' (the catalogue knows it as {sku!r})' if sku else ''}: MFU stays empty unless "
              f"hardware.peak_tflops is given", file=sys.stderr)
        return "unknown"
    if sku != hw.gpu:
        raise ConfigError("hardware.gpu", f"the config says {hw.gpu!r} but this machine's GPU is {name!r} "
                                          f"(catalogue key {sku!r}); MFU and cost would use the wrong peak. "
                                          f"Allowed values: {sku or 'unknown (runs with a warning), or add '}"
                                          f"{'' if sku else 'configs/gpu/<key>.yaml with its datasheet figures'}")
    return sku


_VERSIONS = ("import json, torch; nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None; "
             "print(json.dumps({'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
             "'nccl': '.'.join(map(str, nccl)) if isinstance(nccl, tuple) else nccl}))")


def device_versions(cfg: BenchConfig) -> dict[str, str | None]:
    """CUDA, cuDNN and NCCL as torch was built with them, and the driver: they change kernels and speed. Read in a
    subprocess (no CUDA context here); empty on CPU hardware, where none of them runs."""
    if cfg.hardware.gpu == "cpu":
        return {}
    out = subprocess.run([sys.executable, "-c", _VERSIONS], capture_output=True, text=True, check=True).stdout
    versions = {k: None if v is None else str(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    smi = shutil.which("nvidia-smi")
    query = smi and subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                   text=True)
    versions["driver"] = query.stdout.split("\n")[0].strip() if query and query.returncode == 0 else None
    return versions
