"""GPU catalogue: the peak numbers every MFU, cost and prediction is divided by, read from `configs/gpu/<key>.yaml`.

All FLOP/s are *dense* tensor-core peaks (the datasheets' "with sparsity" figures are twice these and are never
used). For GeForce cards the bf16/fp16 peak is the one with fp32 accumulation, which is what autocast training uses.
Bandwidths are per GPU and per direction, in the datasheet's decimal GB/s. Prices are approximate public figures in
USD and are only defaults: a hardware YAML may override them (`hardware.price_per_hour`, `hardware.purchase_price`).
Each YAML cites its datasheet; adding a GPU is adding a file.

This module imports nothing from torch so that tables and estimates work on a laptop.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

import yaml

from pretrain_bench.spec.paths import CONFIG_DIR

TFLOPS = 1e12
GB = 1e9


@dataclass(frozen=True)
class GPUSpec:
    key: str
    name: str
    arch: str  # volta | ampere | ada | hopper | blackwell | cpu
    memory_gib: float
    peak_flops: dict[str, float]  # dtype -> dense FLOP/s; dtypes: bf16, fp16, tf32, fp32, fp8
    price_per_hour: float | None  # cloud on-demand USD per GPU-hour
    purchase_price: float | None  # USD per GPU
    device_names: tuple[str, ...] = ()  # names inside torch.cuda.get_device_name() that identify this SKU
    interconnect: str = ""
    memory_bandwidth: float = 0.0  # HBM/GDDR bytes/s
    nvlink_bandwidth: float = 0.0  # GPU-to-GPU bytes/s each way; 0: peers talk over PCIe
    pcie_bandwidth: float = 0.0  # host link bytes/s each way (offload)
    network_bandwidth: float = 0.0  # inter-node bytes/s per GPU
    perf: str = ""  # which configs/perf/<name>.yaml efficiency constants apply ("": the arch's)
    source: str = field(default="", compare=False)

    @property
    def supports_bf16(self) -> bool:
        return "bf16" in self.peak_flops

    def peak(self, dtype: str) -> float | None:
        return self.peak_flops.get(dtype)


def _spec(data: dict) -> GPUSpec:
    return GPUSpec(
        key=data["key"], name=data["name"], arch=data["arch"], memory_gib=float(data["memory_gib"]),
        peak_flops={k: float(v) * TFLOPS for k, v in (data.get("peak_tflops") or {}).items()},
        price_per_hour=data.get("price_per_hour"), purchase_price=data.get("purchase_price"),
        device_names=tuple(data.get("device_names") or ()), interconnect=data.get("interconnect", ""),
        memory_bandwidth=float(data.get("memory_bandwidth_gbs", 0)) * GB,
        nvlink_bandwidth=float(data.get("nvlink_gbs", 0)) * GB, pcie_bandwidth=float(data.get("pcie_gbs", 0)) * GB,
        network_bandwidth=float(data.get("network_gbs", 0)) * GB, perf=data.get("perf") or data["arch"],
        source=data.get("source", ""))


@cache
def _load() -> dict[str, GPUSpec]:
    specs = {}
    for path in sorted((CONFIG_DIR / "gpu").glob("*.yaml")):
        spec = _spec(yaml.safe_load(path.read_text()))
        if spec.key != path.stem:
            raise ValueError(f"{path}: key {spec.key!r} must equal the file name {path.stem!r}")
        specs[spec.key] = spec
    return specs


class _Catalogue(Mapping):
    """The YAML files as a read-only mapping, loaded on first use (so importing this module reads no files)."""

    def __getitem__(self, key: str) -> GPUSpec:
        return _load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_load())

    def __len__(self) -> int:
        return len(_load())


CATALOGUE: Mapping[str, GPUSpec] = _Catalogue()


def gpu(key: str) -> GPUSpec:
    """The catalogue entry for `key`, or a KeyError that lists the known keys."""
    try:
        return CATALOGUE[key]
    except KeyError:
        raise KeyError(f"unknown GPU type {key!r}; known: {', '.join(sorted(CATALOGUE))}") from None


def _names_in(name: str, text: str) -> bool:
    """`name` occurs in `text` as whole words: "H200" is in "NVIDIA H200 NVL" but not in "NVIDIA GH200 480GB"."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def identify(device_name: str) -> str | None:
    """The catalogue key whose identifying name appears, as whole words, in a CUDA device name (None if unknown).

    The longest matching name wins, so the most specific entry does: "H200 NVL" before "H200".
    """
    matches = [(len(n), spec.key) for spec in CATALOGUE.values() for n in spec.device_names
               if _names_in(n, device_name)]
    return max(matches)[1] if matches else None


def peak_dtype(precision: str, tf32: bool) -> str:
    """Which peak a run is held to: the tensor-core peak of its compute dtype (TF32 for fp32 matmuls with TF32 on)."""
    if precision in ("bf16", "fp16", "fp8"):
        return precision
    return "tf32" if tf32 else "fp32"
