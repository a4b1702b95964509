"""GPU catalogue: the peak numbers every MFU and cost figure is divided by.

All FLOP/s are *dense* tensor-core peaks (the datasheets' "with sparsity" figures are twice these and are never
used). For GeForce cards the bf16/fp16 peak is the one with fp32 accumulation, which is what autocast training uses.
Prices are approximate public figures in USD and are only defaults: a hardware YAML may override them
(`hardware.price_per_hour`, `hardware.purchase_price`).

This module imports nothing from torch so that tables and estimates work on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass

TFLOPS = 1e12


@dataclass(frozen=True)
class GPUSpec:
    key: str
    name: str
    arch: str  # volta | ampere | ada | hopper | cpu
    memory_gib: float
    peak_flops: dict[str, float]  # dtype -> dense FLOP/s; dtypes: bf16, fp16, tf32, fp32, fp8
    price_per_hour: float | None  # cloud on-demand USD per GPU-hour
    purchase_price: float | None  # USD per GPU
    device_names: tuple[str, ...] = ()  # substrings of torch.cuda.get_device_name() that identify this SKU
    interconnect: str = ""

    @property
    def supports_bf16(self) -> bool:
        return "bf16" in self.peak_flops

    def peak(self, dtype: str) -> float | None:
        return self.peak_flops.get(dtype)


def _tf(**kw: float) -> dict[str, float]:
    return {k: v * TFLOPS for k, v in kw.items()}


CATALOGUE: dict[str, GPUSpec] = {
    # NVIDIA H100 Tensor Core GPU datasheet (2023), SXM5 column: BF16/FP16 989.4, TF32 494.7, FP32 66.9,
    # FP8 1978.9 dense TFLOP/s; 80 GB HBM3; NVLink 900 GB/s. Cloud: Lambda on-demand 8xH100 SXM, $2.99/GPU-h (2024).
    # Purchase: about $30k per GPU, the figure used by Khandelwal et al. (2024) and most press reports.
    "h100": GPUSpec("h100", "H100 SXM5 80GB", "hopper", 80,
                    _tf(bf16=989.4, fp16=989.4, tf32=494.7, fp32=66.9, fp8=1978.9),
                    price_per_hour=2.99, purchase_price=30000,
                    device_names=("H100 80GB HBM3", "H100 SXM"), interconnect="NVLink 4 (900 GB/s)"),
    # NVIDIA H200 datasheet (2024): same Hopper compute as the H100 SXM (BF16/FP16 989, TF32 494.7, FP32 66.9, FP8
    # 1979 dense TFLOP/s) with 141 GB HBM3e at 4.8 TB/s. Cloud: about $3.50/GPU-h (2025); purchase about $32k.
    "h200": GPUSpec("h200", "H200 SXM 141GB", "hopper", 141,
                    _tf(bf16=989.4, fp16=989.4, tf32=494.7, fp32=66.9, fp8=1978.9),
                    price_per_hour=3.50, purchase_price=32000,
                    device_names=("H200",), interconnect="NVLink 4 (900 GB/s)"),
    # Same datasheet, PCIe column: BF16/FP16 756.5, TF32 378, FP32 51.2, FP8 1513 dense TFLOP/s; 80 GB HBM2e.
    # Cloud: Lambda on-demand 1xH100 PCIe, $2.49/GPU-h (2024).
    "h100-pcie": GPUSpec("h100-pcie", "H100 PCIe 80GB", "hopper", 80,
                         _tf(bf16=756.5, fp16=756.5, tf32=378.0, fp32=51.2, fp8=1513.0),
                         price_per_hour=2.49, purchase_price=25000,
                         device_names=("H100 PCIe",), interconnect="PCIe Gen5"),
    # NVIDIA A100 Tensor Core GPU datasheet (2021): BF16/FP16 312, TF32 156, FP32 19.5 dense TFLOP/s; no FP8.
    # Cloud: Lambda on-demand A100 40GB $1.29/GPU-h, A100 80GB SXM $1.79/GPU-h (2024).
    "a100-40gb": GPUSpec("a100-40gb", "A100 SXM4 40GB", "ampere", 40,
                         _tf(bf16=312, fp16=312, tf32=156, fp32=19.5),
                         price_per_hour=1.29, purchase_price=10000,
                         device_names=("A100-SXM4-40GB", "A100-PCIE-40GB"), interconnect="NVLink 3 (600 GB/s)"),
    "a100-80gb": GPUSpec("a100-80gb", "A100 SXM4 80GB", "ampere", 80,
                         _tf(bf16=312, fp16=312, tf32=156, fp32=19.5),
                         price_per_hour=1.79, purchase_price=15000,
                         device_names=("A100-SXM4-80GB", "A100 80GB PCIe"), interconnect="NVLink 3 (600 GB/s)"),
    # NVIDIA RTX A6000 datasheet: FP32 38.7, TF32 tensor 77.4 (154.8 sparse), BF16/FP16 tensor 154.8 (309.7 sparse)
    # TFLOP/s; 48 GB GDDR6. List price $4,650 (NVIDIA, 2020). Cloud: Lambda on-demand $0.80/GPU-h (2024).
    "a6000": GPUSpec("a6000", "RTX A6000 48GB", "ampere", 48,
                     _tf(bf16=154.8, fp16=154.8, tf32=77.4, fp32=38.7),
                     price_per_hour=0.80, purchase_price=4650,
                     device_names=("RTX A6000",), interconnect="PCIe Gen4 / NVLink bridge"),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183, BF16/FP16 362.05, FP8 733 dense TFLOP/s; 48 GB GDDR6.
    # Cloud: about $1.0/GPU-h on common providers (2024); purchase about $8k.
    "l40s": GPUSpec("l40s", "L40S 48GB", "ada", 48,
                    _tf(bf16=362.05, fp16=362.05, tf32=183.0, fp32=91.6, fp8=733.0),
                    price_per_hour=1.00, purchase_price=8000,
                    device_names=("L40S",), interconnect="PCIe Gen4"),
    # NVIDIA Ampere GA102 whitepaper, RTX 3090: FP16/BF16 tensor with FP32 accumulate 71 (142 sparse),
    # TF32 tensor 35.6, FP32 35.6 TFLOP/s; 24 GB GDDR6X. Launch MSRP $1,499. Cloud: about $0.22/GPU-h
    # (community clouds).
    "rtx3090": GPUSpec("rtx3090", "GeForce RTX 3090 24GB", "ampere", 24,
                       _tf(bf16=71, fp16=71, tf32=35.6, fp32=35.6),
                       price_per_hour=0.22, purchase_price=1499,
                       device_names=("RTX 3090",), interconnect="PCIe Gen4"),
    # NVIDIA Ada AD102 whitepaper, RTX 4090: FP16/BF16 tensor with FP32 accumulate 165.2, TF32 82.6, FP32 82.6,
    # FP8 (FP32 accumulate) 330.3 dense TFLOP/s; 24 GB GDDR6X. Launch MSRP $1,599. Cloud: about $0.34/GPU-h.
    "rtx4090": GPUSpec("rtx4090", "GeForce RTX 4090 24GB", "ada", 24,
                       _tf(bf16=165.2, fp16=165.2, tf32=82.6, fp32=82.6, fp8=330.3),
                       price_per_hour=0.34, purchase_price=1599,
                       device_names=("RTX 4090",), interconnect="PCIe Gen4"),
    # NVIDIA V100 datasheet, SXM2: FP16 tensor 125, FP32 15.7 TFLOP/s; no BF16 or TF32; 32 GB HBM2.
    # Cloud: AWS p3 on-demand about $3.06/GPU-h; purchase about $10k at launch.
    "v100": GPUSpec("v100", "Tesla V100 SXM2 32GB", "volta", 32,
                    _tf(fp16=125, fp32=15.7),
                    price_per_hour=3.06, purchase_price=10000,
                    device_names=("V100",), interconnect="NVLink 2 (300 GB/s)"),
    # Processes on the host CPU: for tests and demos. No meaningful peak, so MFU is null and no cost is computed.
    "cpu": GPUSpec("cpu", "CPU process", "cpu", 0, {}, price_per_hour=None, purchase_price=None),
}


def gpu(key: str) -> GPUSpec:
    """The catalogue entry for `key`, or a KeyError that lists the known keys."""
    try:
        return CATALOGUE[key]
    except KeyError:
        raise KeyError(f"unknown GPU type {key!r}; known: {', '.join(sorted(CATALOGUE))}") from None


def identify(device_name: str) -> str | None:
    """The catalogue key whose identifying substring appears in a CUDA device name (None if unknown)."""
    for spec in CATALOGUE.values():
        if any(s.lower() in device_name.lower() for s in spec.device_names):
            return spec.key
    return None


def peak_dtype(precision: str, tf32: bool) -> str:
    """Which peak a run is held to: the tensor-core peak of its compute dtype (TF32 for fp32 matmuls with TF32 on)."""
    if precision in ("bf16", "fp16", "fp8"):
        return precision
    return "tf32" if tf32 else "fp32"
