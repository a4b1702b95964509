"""Communication per optimizer step: what each strategy sends, over which link, and how much of it compute hides.

Ring collectives move (n-1)/n of the buffer through every GPU's link. Within a node that link is NVLink (PCIe
when the GPUs have none); across nodes each ring crosses the network once per node, and NCCL runs one ring per
NIC, so the bus bandwidth is the node's NICs together (GPUs per node × network per GPU), or NVLink if lower.
What each backend sends (ZeRO paper's accounting; DeepSpeed and FSDP behaviour as their sources show it):
- DDP: one all-reduce of the gradients per step (no sync while accumulating), overlapped with the backward;
- FSDP (FULL_SHARD): per micro-batch, all-gather the parameters for forward and again for backward, and
  reduce-scatter the gradients; FSDP SHARD_GRAD_OP gathers once; both prefetch, so the micro-batch's compute hides
  them except for the first gather and the last reduce;
- ZeRO-1: gradients reduced at the step (overlapped with the last backward), updated parameters all-gathered after
  the optimizer (exposed); ZeRO-2: reduce-scatter at every micro-batch (DeepSpeed reduces during accumulation too);
  ZeRO-3: as FSDP; offload: gradients down and parameters up over PCIe, and the Adam step on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain_bench.analysis.perf.efficiency import Efficiency
from pretrain_bench.analysis.perf.workload import Workload

LATENCY_S = 20e-6  # per collective launch and synchronisation
BUCKET_BYTES = 25e6  # DDP / DeepSpeed gradient buckets
HOST_ADAM_PARAMS_PER_S = 0.5e9  # per GPU's share of the host: ZeRO-Offload's CPU-Adam, ~1B params in 0.22 s per host


@dataclass(frozen=True)
class Comms:
    per_micro_batch_s: float  # sent during every micro-batch, hidden behind its compute
    backward_s: float  # sent once per step during the last backward
    exposed_step_s: float  # sent per step with nothing to hide behind (ZeRO's gather, offload)
    collectives_per_micro_batch: int


def bus_bandwidth(w: Workload, eff: Efficiency, all_reduce: bool = False) -> float:
    """Achieved ring bandwidth per GPU in bytes/s."""
    gpu = w.gpu
    if gpu.arch == "cpu":
        # gloo between processes of one host, as `calibrate` measured it: its all-gather and reduce-scatter run ~4x
        # slower per byte than its all-reduce. Unmeasured: a share of the memory bandwidth.
        measured = eff.allreduce_bandwidth if all_reduce else eff.gather_bandwidth
        return (measured or eff.bandwidth(gpu)) * eff.network
    link = gpu.nvlink_bandwidth or gpu.pcie_bandwidth
    if w.nodes > 1:
        link = min(link, gpu.network_bandwidth * w.gpus_per_node)
    return link * eff.network


def ring_seconds(buffer_bytes: float, w: Workload, eff: Efficiency, all_reduce: bool = False) -> float:
    if w.world == 1:
        return 0.0
    moved = buffer_bytes * (w.world - 1) / w.world * (2 if all_reduce else 1)
    return moved / bus_bandwidth(w, eff, all_reduce)


def param_bytes(w: Workload) -> int:
    """Parameters travel in the compute dtype (FSDP's param_dtype, DeepSpeed's bf16 weights)."""
    return w.act_bytes


def grad_bytes(w: Workload) -> int:
    """torch DDP and FSDP2 reduce fp32 gradients of fp32 master weights; DeepSpeed reduces in the model dtype."""
    return w.act_bytes if w.strategy.startswith("zero") else 4


def per_step(w: Workload, eff: Efficiency) -> Comms:
    p = w.params
    layers = w.model.num_layers
    gather = ring_seconds(p * param_bytes(w), w, eff)
    reduce = ring_seconds(p * grad_bytes(w), w, eff)
    s = w.strategy
    if s == "single" or w.world == 1 and not s.startswith("zero"):
        return Comms(0.0, 0.0, 0.0, 0)
    if s == "ddp":
        buckets = max(1, int(p * 4 / BUCKET_BYTES))
        last_bucket = ring_seconds(min(p * 4, BUCKET_BYTES), w, eff, all_reduce=True)
        all_reduce = ring_seconds(p * grad_bytes(w), w, eff, all_reduce=True)
        return Comms(0.0, all_reduce + buckets * LATENCY_S, last_bucket, 0)
    offload = offload_seconds(w) if "offload" in s else 0.0
    if s in ("fsdp", "zero3") or s.startswith("zero3-"):
        return Comms(2 * gather + reduce + 3 * layers * LATENCY_S, 0.0, offload, 3 * layers)
    if s == "fsdp-grad-op":
        return Comms(gather + reduce + 2 * layers * LATENCY_S, 0.0, 0.0, 2 * layers)
    if s.startswith("zero2"):
        return Comms(reduce, 0.0, gather + offload, 0)
    return Comms(0.0, reduce, gather + offload, 0)  # zero1


def offload_seconds(w: Workload) -> float:
    """Gradients to the host, the host's Adam step, parameters back, for this GPU's shard."""
    shard = w.params / w.world
    link = w.gpu.pcie_bandwidth or 16e9
    return shard * (grad_bytes(w) + param_bytes(w)) / link + shard / HOST_ADAM_PARAMS_PER_S


def exposed(c: Comms, compute_mb_s: float, layers: int, grad_accum: int, overlap: bool = True) -> float:
    """Communication seconds per step that compute does not hide. Without `overlap` (a CPU, whose cores run both
    the collectives and the compute) nothing hides."""
    if not overlap:
        return grad_accum * c.per_micro_batch_s + c.backward_s + c.exposed_step_s
    per_mb = max(0.0, c.per_micro_batch_s - compute_mb_s) + c.per_micro_batch_s * 2 / (3 * max(layers, 1))
    backward = max(0.0, c.backward_s - compute_mb_s * 2 / 3)
    return grad_accum * per_mb + backward + c.exposed_step_s
