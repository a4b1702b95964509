"""Run one cell in fresh worker processes under torchrun, with a time-out, and turn whatever happens into a status.

Isolation is the point: an OOM, a crash or a hang in one cell cannot poison the next, because each cell gets new
processes (and a new CUDA context). The launching process never touches the GPU itself, so it holds no GPU memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pretrain_bench.bench.progress import Watcher, following
from pretrain_bench.config import BenchConfig, to_dict

# The most specific failure among the ranks names the cell's status.
FAILURE_PRIORITY = ("oom", "diverged", "timeout", "error")
UNSIZED_TIMEOUT_S = 1800  # a cell launched without a Runner to size its time-out (tests, direct calls)


@dataclass
class CellOutcome:
    status: str  # ok | oom | error | timeout | diverged
    error: str | None
    measurement: dict | None
    failed_step: int | None = None


def worker_env(cfg: BenchConfig) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", DS_ACCELERATOR="cpu" if cfg.hardware.gpu == "cpu" else "cuda")
    # Split this node's cores (those the job may use) between its ranks. Without it torchrun sets 1 thread per rank
    # whenever it starts several, which leaves DeepSpeed's CPU Adam (ZeRO offload) on one core per GPU and would
    # understate offload's speed; on CPU hardware the ranks are the compute, so they must not oversubscribe.
    # `+env.OMP_NUM_THREADS=…` overrides.
    env["OMP_NUM_THREADS"] = str(threads_per_rank(cfg.hardware.gpus_per_node))
    return {**env, **cfg.env}


def threads_per_rank(ranks_per_node: int) -> int:
    """This node's cores (those this process may use) shared between its ranks."""
    return max(1, len(os.sched_getaffinity(0)) // ranks_per_node)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_head_node() -> str:
    nodelist = os.environ["SLURM_JOB_NODELIST"]
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return hosts.stdout.split()[0]


def node_commands(cfg: BenchConfig, worker: list[str], run_id: str) -> list[list[str]]:
    """The command(s) that start every rank: one torchrun per node, rendezvous over c10d when nodes > 1."""
    hw = cfg.hardware
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--max-restarts=0",
                f"--nproc-per-node={hw.gpus_per_node}"]
    if hw.nodes == 1:
        return [[*torchrun, "--standalone", *worker]]
    if cfg.multinode == "local":  # several "nodes" on this host: tests and rehearsals of a multi-node cell
        endpoint = f"127.0.0.1:{free_port()}"
    else:
        endpoint = f"{slurm_head_node()}:{29_500 + int(run_id[:4], 16) % 2000}"
    multi = [*torchrun, f"--nnodes={hw.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
             f"--rdzv-id={run_id}", *worker]
    if cfg.multinode == "local":
        return [multi] * hw.nodes
    # One task per node inside the job's allocation; a failed node ends the step on every node.
    return [["srun", f"--nodes={hw.nodes}", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1", *multi]]


def run_cell(cfg: BenchConfig, work_dir: Path, mode: str = "throughput",
             corpus: Path | None = None, watcher: Watcher | None = None) -> CellOutcome:
    """Launch the ranks of one cell, wait at most cfg.timeout_s, and read the ranks' status files.

    `work_dir` receives the cell spec, one status file per rank and the log; it must be on a file system that every
    node sees (the store is) when the cell spans nodes. A watcher hears the log's lines while the ranks run.
    """
    return run_cells([cfg], work_dir, mode, corpus, watcher)[0]


def run_cells(cfgs: list[BenchConfig], work_dir: Path, mode: str = "throughput",
              corpus: Path | None = None, watcher: Watcher | None = None) -> list[CellOutcome]:
    """Several cells of one hardware layout in one launch, trained in turn by the same ranks: the process start and
    imports (~9 s on a small CPU) are paid once. For equivalence checks, where a cell's failure may end the
    launch; a measurement that must stand alone (OOM probes, timings) gets a launch of its own (`run_cell`).

    Cell i's status files lie in `work_dir` for a single cell, else in `work_dir/cell<i>`.
    """
    if len({(c.hardware.name, c.world_size, c.multinode) for c in cfgs}) != 1:
        raise ValueError("cells launched together must share one hardware layout")
    cfg = cfgs[0]
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    spec = work_dir / "cell.json"
    spec.write_text(json.dumps({"configs": [to_dict(c) for c in cfgs], "mode": mode,
                                "corpus": corpus and str(corpus)}))
    worker = ["-m", "pretrain_bench.train.worker", str(spec), str(work_dir)]
    commands = node_commands(cfg, worker, run_id=hashlib.sha1(str(work_dir).encode()).hexdigest()[:12])
    cell_dirs = [work_dir] if len(cfgs) == 1 else [work_dir / f"cell{i}" for i in range(len(cfgs))]
    oom_kills = oom_kill_count()
    log_path = work_dir / "log.txt"
    log_path.touch()  # before the follower starts, so that it never waits on a file a crash never wrote
    with (open(log_path, "w") as log, _signals_raise(),
          following(log_path, watcher) if watcher else contextlib.nullcontext()):
        # Each node's launcher in its own process group: a time-out or an interrupt kills every rank it started.
        procs = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=worker_env(cfg),
                                  start_new_session=True) for cmd in commands]
        timeout_s = sum(c.timeout_s or UNSIZED_TIMEOUT_S for c in cfgs)
        deadline = time.monotonic() + timeout_s
        try:
            codes = [p.wait(timeout=max(0.0, deadline - time.monotonic())) for p in procs]
        except subprocess.TimeoutExpired:
            return [CellOutcome("timeout", f"no result after timeout_s={timeout_s} s; all ranks killed", None)
                    for _ in cfgs]
        finally:
            for p in procs:
                if p.poll() is None:
                    _kill_group(p)
    killed_for_memory = None not in (oom_kills, after := oom_kill_count()) and after > oom_kills
    return [_outcome([json.loads(p.read_text()) for p in sorted(d.glob("rank*.json"))], cfg.world_size, max(codes),
                     work_dir / "log.txt", killed_for_memory) for d in cell_dirs]


def oom_kill_count() -> int | None:
    """How many processes the kernel's OOM killer has ended in this process's memory cgroup (v2 `memory.events`,
    v1 `memory.oom_control`), None where neither is readable. A rank killed by SIGKILL while it grew is an `oom`."""
    root = Path("/sys/fs/cgroup")
    lines = Path("/proc/self/cgroup").read_text().splitlines() if Path("/proc/self/cgroup").exists() else []
    paths = {"v2": "", "v1": ""}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            paths["v2"] = path.lstrip("/")
        elif "memory" in controllers.split(","):
            paths["v1"] = path.lstrip("/")
    candidates = [root / paths["v2"] / "memory.events", root / "memory.events",
                  root / "memory" / paths["v1"] / "memory.oom_control", root / "memory" / "memory.oom_control"]
    for f in candidates:
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
    return None


@contextlib.contextmanager
def _signals_raise():
    """Turn SIGTERM into an exception while ranks run, so that `finally` kills them instead of orphaning them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _outcome(ranks: list[dict], world: int, code: int, log_path: Path,
             killed_for_memory: bool = False) -> CellOutcome:
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    reported = {r["rank"] for r in ranks}
    dead_rank, cause = _dead_rank(log, reported)
    failures = sorted((r for r in ranks if r["status"] != "ok"), key=lambda r: FAILURE_PRIORITY.index(r["status"]))
    if dead_rank is not None:
        # A rank died without reporting (killed, segfault): that is the cause; the others only lost their peer.
        then = f"; then {failures[0]['error']}" if failures else ""
        if killed_for_memory and "SIGKILL" in cause:
            return CellOutcome("oom", f"{cause}the kernel's OOM killer ended a process of this cell (host memory); "
                                      f"{len(ranks)} of {world} ranks reported{then}", None)
        return CellOutcome("error", f"{cause}{len(ranks)} of {world} ranks reported{then}", None)
    if failures:
        first = failures[0]
        return CellOutcome(first["status"], first["error"], None, failed_step=first.get("step"))
    measured = [r for r in ranks if r.get("measurement")]
    if len(ranks) < world or not measured:
        tail = "\n".join(log.splitlines()[-15:])
        return CellOutcome("error", f"workers exited with code {code}; {len(ranks)} of {world} ranks reported; "
                                    f"log tail:\n{tail}", None)
    # Every rank finished and reported: the measurement stands even if a process then died while exiting.
    return CellOutcome("ok", None, measured[0]["measurement"])


def _dead_rank(log: str, reported: set[int]) -> tuple[int | None, str]:
    """A rank that died without reporting, from torchrun's failure summary: (rank, 'rank 1 died: SIGKILL; ').

    Ranks that torchrun itself stopped with SIGTERM after the first failure are survivors, not causes.
    """
    for rank, code in re.findall(r"rank\s*:\s*(\d+) \(local_rank.*?exitcode\s*:\s*(-?\d+)", log, re.S):
        rank, code = int(rank), int(code)
        if rank not in reported and code not in (0, -signal.SIGTERM):
            name = signal.Signals(-code).name if code < 0 else f"exit code {code}"
            return rank, f"rank {rank} died ({name}) without reporting; "
    return None, ""
