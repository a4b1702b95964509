"""The per-generation efficiency constants of the performance model, read from `configs/perf/<name>.yaml`.

Lookup order for a GPU: a calibration of that GPU from the user's own measurements (`<store>/calibration/<key>.yaml`,
written by `pretrain-bench calibrate`), then `configs/perf/<gpu key>.yaml`, then `configs/perf/<class>.yaml` (the
catalogue's `perf` class, by default its arch; fitted on published measurements by `scripts/fit_perf.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from pretrain_bench.config import CONFIG_DIR, ConfigError
from pretrain_bench.spec import gpus

FITTED = ("matmul", "width", "attention", "memory", "network", "launch_us")  # what a fit may move


@dataclass(frozen=True)
class Efficiency:
    matmul: float = 0.7  # fraction of the dense peak that large weight matmuls reach
    width: float = 64.0  # matmul dimension at which efficiency halves (tile and wave quantisation)
    attention: float = 0.5  # fraction of the dense peak a fused (flash / SDPA) attention kernel reaches
    memory: float = 0.8  # fraction of the memory bandwidth memory-bound kernels reach
    network: float = 0.8  # fraction of the link bandwidth collectives reach
    launch_us: float = 5.0  # floor per kernel (launch latency): small models cannot go faster
    peak_flops: float | None = None  # measured peak (a CPU has no datasheet peak); None: the catalogue's
    memory_bandwidth: float | None = None  # measured bytes/s of the memory-bound kernels; None: the catalogue's
    allreduce_bandwidth: float | None = None  # measured bus bytes/s of an all-reduce (gloo on a CPU); None: the link's
    gather_bandwidth: float | None = None  # … of an all-gather or reduce-scatter
    error_low: float = 0.9  # measured / predicted at the 10th percentile of the fit: the interval
    error_high: float = 1.1  # … and at the 90th
    fitted: str = ""  # how the numbers were obtained

    def peak(self, gpu: gpus.GPUSpec, dtype: str) -> float:
        peak = self.peak_flops or gpu.peak(dtype)
        if not peak:
            raise ConfigError("hardware.gpu", f"{gpu.name} has no {dtype} peak in the catalogue; calibrate it "
                                              f"(`pretrain-bench calibrate`) or choose a precision it lists: "
                                              f"{', '.join(gpu.peak_flops) or 'none'}")
        return peak

    def bandwidth(self, gpu: gpus.GPUSpec) -> float:
        bw = self.memory_bandwidth or gpu.memory_bandwidth
        if not bw:
            raise ConfigError("hardware.gpu", f"{gpu.name} has no memory bandwidth; run `pretrain-bench calibrate`")
        return bw


def peak(w, eff: Efficiency) -> float:
    """FLOP/s one process of workload `w` gets at its compute dtype."""
    return eff.peak(w.gpu, w.peak_dtype) / w.device_share


def bandwidth(w, eff: Efficiency) -> float:
    """Memory bytes/s one process of workload `w` gets."""
    return eff.bandwidth(w.gpu) / w.device_share


def read(path: Path) -> Efficiency:
    data = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in fields(Efficiency)}
    return Efficiency(**{k: v for k, v in data.items() if k in known})


def write(path: Path, eff: Efficiency, comment: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(head + yaml.safe_dump({k: v for k, v in asdict(eff).items() if v is not None}, sort_keys=False))


def calibration_path(store_dir: str | Path, gpu_key: str) -> Path:
    return Path(store_dir).expanduser() / "calibration" / f"{gpu_key}.yaml"


def for_gpu(gpu: gpus.GPUSpec, store_dir: str | Path | None = None) -> Efficiency:
    """The constants predictions of `gpu` use (see the module docstring for the order)."""
    candidates = [calibration_path(store_dir, gpu.key)] if store_dir else []
    candidates += [CONFIG_DIR / "perf" / f"{gpu.key}.yaml", CONFIG_DIR / "perf" / f"{gpu.perf or gpu.arch}.yaml"]
    for path in candidates:
        if path.exists():
            return read(path)
    return Efficiency(fitted="defaults: no fit for this generation")


def with_values(eff: Efficiency, values: dict[str, float]) -> Efficiency:
    return replace(eff, **values)
