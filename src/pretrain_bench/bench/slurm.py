"""Sweeps on SLURM: one job per cell, submitted through submitit with the parameters of `hydra/launcher=slurm`.

hydra-submitit-launcher itself blocks until every job ends and keeps the job ids and sbatch's errors to its own
log, so the sweep composes the launcher's config with Hydra but submits with submitit here: the job ids go into
the cells' status files, sbatch errors reach the terminal, and the login process may leave (`--detach`). Each job's
resources come from its hardware config and are checked against the partition (`sinfo`) before anything is
submitted: a job that could never start is a ConfigError, not a job pending forever. No torch here.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pretrain_bench import config

CPUS_PER_GPU = 8  # default cpus_per_task per GPU of the cell, capped at what a node has
# The scheduler's job states in our words; `active` ones are never launched again.
SCHEDULER_STATES = {
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_FED": "queued", "REQUEUE_HOLD": "queued",
    "RESV_DEL_HOLD": "queued", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
    "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running", "SUSPENDED": "running",
    "STOPPED": "running", "COMPLETED": "finished", "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed",
    "OUT_OF_MEMORY": "failed", "CANCELLED": "cancelled", "REVOKED": "cancelled", "DEADLINE": "timed out",
    "TIMEOUT": "timed out", "PREEMPTED": "preempted",
}
ACTIVE = ("queued", "running")
# hydra-submitit-launcher's own keys, not submitit parameters (the job name and folder are set per sweep here).
NOT_PARAMETERS = {"_target_", "submitit_folder", "name", "max_num_timeout"}


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int
    cpus: int  # per node (the smallest node of the partition)
    memory_mb: int
    gpus: int


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise config.ConfigError("hydra/launcher", f"`{cmd[0]}` not found: this machine is not a SLURM login node; "
                                                   "allowed here: basic, submitit_local") from None
    if out.returncode:
        raise config.ConfigError("hydra/launcher", f"`{' '.join(cmd)}` failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def partition(name: str | None) -> Partition:
    """The partition's nodes as `sinfo` reports them (the default partition, marked `*`, when name is None)."""
    rows = [line.split("|") for line in _run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G"]).splitlines() if line]
    names = {p.rstrip("*") for p, *_ in rows}
    wanted = name or next((p.rstrip("*") for p, *_ in rows if p.endswith("*")), None)
    if wanted not in names:
        raise config.ConfigError("hydra.launcher.partition", f"no partition {wanted!r} on this cluster; allowed "
                                                             f"values: {', '.join(sorted(names)) or 'none (sinfo)'}")
    nodes = [r for r in rows if r[0].rstrip("*") == wanted]
    return Partition(wanted, len({r[1] for r in nodes}), min(int(r[2]) for r in nodes),
                     min(int(r[3]) for r in nodes), min(_gres_gpus(r[4]) for r in nodes))


def _gres_gpus(gres: str) -> int:
    """GPUs in a `sinfo %G` field such as `gpu:2`, `gpu:a100:8(S:0-1)` or `(null)`."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def job_parameters(hw: config.HardwareConfig, params: dict, part: Partition) -> dict:
    """submitit parameters of one cell's job: the launcher config with the hardware's nodes and GPUs, one task per
    node (it starts torchrun), and CPUs as the node can give them; every request checked against the partition."""
    gpus = 0 if hw.gpu == "cpu" else hw.gpus_per_node
    if hw.nodes > part.nodes:
        raise config.ConfigError("hardware.nodes", f"{hw.name} needs {hw.nodes} nodes; partition {part.name} has "
                                                   f"{part.nodes}; allowed values: up to {part.nodes}")
    if gpus > part.gpus:
        raise config.ConfigError("hardware.gpus_per_node", f"{hw.name} needs {gpus} GPUs per node; the nodes of "
                                                           f"partition {part.name} have {part.gpus} (GRES gpu)")
    default_cpus = part.cpus if not gpus else min(CPUS_PER_GPU * gpus, part.cpus)
    cpus = params.get("cpus_per_task") or default_cpus
    if cpus > part.cpus:
        raise config.ConfigError("hydra.launcher.cpus_per_task", f"{cpus} CPUs per task; the nodes of partition "
                                                                 f"{part.name} have {part.cpus}; allowed values: "
                                                                 f"1..{part.cpus}")
    if params.get("mem_gb") and params["mem_gb"] * 1024 > part.memory_mb:
        raise config.ConfigError("hydra.launcher.mem_gb", f"{params['mem_gb']} GB per node; the nodes of partition "
                                                          f"{part.name} have {part.memory_mb} MB")
    if params.get("signal_delay_s", 0) >= 60 * params["timeout_min"]:
        raise config.ConfigError("hydra.launcher.signal_delay_s", f"{params['signal_delay_s']} s warning does not fit "
                                                                  f"a {params['timeout_min']} min time limit")
    out = {k: v for k, v in params.items() if k not in NOT_PARAMETERS and v is not None}
    out.update(nodes=hw.nodes, tasks_per_node=1, cpus_per_task=cpus, partition=part.name)
    out.pop("gpus_per_node", None)  # a GPU-less node rejects --gpus-per-node=0: CPU layouts ask for none
    if gpus:
        out["gpus_per_node"] = gpus
    return out


def executor(folder: Path, parameters: dict, max_requeues: int, name: str):
    """A submitit SLURM executor, with hydra-submitit-launcher's mapping of parameter names."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_requeues)
    ex.update_parameters(name=name, **{k if k in base else f"slurm_{k}": v for k, v in parameters.items()})
    return ex


def states(job_ids: list[str]) -> dict[str, str]:
    """The scheduler's state of each job, in our words (SCHEDULER_STATES). squeue knows every queued and running
    job, so a job it does not list has ended; accounting (sacct) says how, else its state is `ended`."""
    if not job_ids:
        return {}
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode and "Invalid job id" not in out.stderr:  # squeue says so when it knows none of them
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    found = dict(line.split("|") for line in out.stdout.splitlines() if line)
    if rest := [j for j in job_ids if j not in found]:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(rest)],
                             capture_output=True, text=True, timeout=60)
        found |= {job: state.split()[0] for job, state in (line.split("|") for line in out.stdout.splitlines())
                  if job in rest}  # "CANCELLED by 0"
    return {job: SCHEDULER_STATES.get(found[job], found[job].lower()) if job in found else "ended"
            for job in job_ids}


def cancel(job_ids: list[str]) -> None:
    """scancel the jobs; one that has already ended is no error (an interrupted sweep cancels all of its jobs)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


class SubmitError(RuntimeError):
    """sbatch (or submitit) refused a job; `submitted` holds the jobs submitted before it."""

    def __init__(self, message: str, submitted: dict[str, str]):
        super().__init__(message)
        self.submitted = submitted
