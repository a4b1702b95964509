"""Sweeps: a grid of (model, hardware) cells, each one method search, launched locally or on SLURM.

The grid comes from Hydra multirun syntax (`model=a,b hardware=x,y`) and/or a preset in `configs/sweep/`. Every cell
is validated before anything is launched. Each cell has a status file (`<store>/status/<cell>.json`: pending,
running, done, failed, and the SLURM job id), so re-running a sweep launches only the cells that are not done and
whose job is not queued or running: Hydra itself cannot resume a multirun. Local launchers run one Hydra multirun
per hardware layout (`python -m pretrain_bench.bench.sweep_app -m cell=…`); on SLURM each cell is one job with the
nodes and GPUs of its layout (bench/slurm.py), so a job that dies affects one cell. No torch here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from pretrain_bench import config
from pretrain_bench.bench import search, slurm
from pretrain_bench.bench.store import Store
from pretrain_bench.config.cli_options import split_list
from pretrain_bench.config.compose import options as group_options

STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class Cell:
    id: str
    model: str
    hardware: str
    methods: str
    overrides: tuple[str, ...]  # everything that recreates the cell's search
    strategies: tuple[str, ...] = ()  # restrict the search to these strategies (empty: all)

    @property
    def label(self) -> str:
        return f"{self.model} on {self.hardware} ({self.methods})"


def _split(overrides: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(cell overrides, Hydra launcher overrides, sweep options `sweep=`, `methods=` and `strategies=`)."""
    cell, launcher, options = [], [], {}
    for o in overrides:
        key = o.split("=", 1)[0]
        if key.startswith(("hydra/", "hydra.")):
            launcher.append(o)
        elif key in ("sweep", "methods", "strategies"):
            options[key] = o.split("=", 1)[1]
        else:
            cell.append(o)
    return cell, launcher, options


def _preset(name: str) -> dict:
    path = config.CONFIG_DIR / "sweep" / f"{name}.yaml"
    if not path.exists():
        raise config.ConfigError("sweep", f"no preset {name!r}; allowed values: {', '.join(group_options('sweep'))}")
    return OmegaConf.to_container(OmegaConf.load(path))


def expand(overrides: list[str]) -> tuple[list[Cell], list[str]]:
    """The sweep's cells (validated) and the launcher overrides, from multirun-style command-line overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cell_overrides, launcher, options = _split(overrides)
    preset = _preset(options["sweep"]) if "sweep" in options else {}
    methods = options.get("methods", preset.get("methods", "free-lunch"))
    grid = [f"model={','.join(preset['models'])}"] if "models" in preset else []
    grid += [f"hardware={','.join(preset['hardware'])}"] if "hardware" in preset else []
    parsed = OverridesParser.create().parse_overrides([*grid, *preset.get("overrides", []), *cell_overrides])
    axes = {}
    for o in parsed:  # later overrides of the same key win, as in Hydra
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes[o.get_key_element()] = [f"{o.get_key_element()}={v}" for v in values]
    strategies = tuple(split_list(options["strategies"])) if "strategies" in options else ()
    cells = []
    for combo in itertools.product(*axes.values()):
        base = search.base_config(list(combo))  # fails here, before any launch, on bad input
        search.candidates(base, methods, list(strategies))  # so do unknown methods or strategies
        digest = hashlib.sha1(json.dumps([sorted(combo), methods, strategies]).encode()).hexdigest()[:12]
        cells.append(Cell(digest, base.model.name, base.hardware.name, methods, tuple(combo), strategies))
    return cells, launcher


# --- status files (one per cell, written atomically) -------------------------------------------------------------

def status_path(store: Store, cell_id: str) -> Path:
    return store.root / "status" / f"{cell_id}.json"


def write_status(store: Store, cell: Cell, state: str, **extra) -> None:
    """The cell's state; the scheduler's job id, given at submission, is kept through the job's own updates."""
    path = status_path(store, cell.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    job_id = (read_status(store, cell.id) or {}).get("job_id")
    data = {"cell": asdict(cell), "state": state, "updated": time.time(), "host": socket.gethostname(),
            "job_id": job_id, **extra}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_status(store: Store, cell_id: str) -> dict | None:
    path = status_path(store, cell_id)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def job_ids(store: Store, cells: list[Cell]) -> dict[str, str]:
    """{cell id: SLURM job id} of the cells that were submitted to SLURM."""
    return {c.id: st["job_id"] for c in cells if (st := read_status(store, c.id)) and st.get("job_id")}


def scheduler_states(store: Store, cells: list[Cell]) -> dict[str, str]:
    """{cell id: the scheduler's state of its job} (queued, running, finished, failed, cancelled, timed out, …)."""
    jobs = job_ids(store, cells)
    try:
        by_job = slurm.states(list(jobs.values()))
    except FileNotFoundError:  # read on a machine without SLURM's commands: our states only
        return {}
    return {cell: by_job[job] for cell, job in jobs.items()}


def missing(store: Store, cells: list[Cell], scheduler: dict[str, str] | None = None) -> list[Cell]:
    """Cells to launch: not done, and not queued or running on the scheduler (that would duplicate them)."""
    scheduler = scheduler or {}
    return [c for c in cells if (read_status(store, c.id) or {}).get("state") != "done"
            and scheduler.get(c.id) not in slurm.ACTIVE]


# --- launching -----------------------------------------------------------------------------------------------------

def write_plan(store: Store, cells: list[Cell]) -> Path:
    sweep_id = hashlib.sha1("".join(sorted(c.id for c in cells)).encode()).hexdigest()[:10]
    path = store.root / "sweeps" / sweep_id / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"store": str(store.root.resolve()), "cells": {c.id: asdict(c) for c in cells}},
                               indent=2))
    return path


def launcher_name(launcher: list[str]) -> str:
    chosen = [o.split("=", 1)[1] for o in launcher if o.startswith("hydra/launcher=")]
    return chosen[-1] if chosen else "basic"


def is_slurm(launcher: list[str]) -> bool:
    return "slurm" in launcher_name(launcher)


def hydra_commands(store: Store, cells: list[Cell], launcher: list[str]) -> list[list[str]]:
    """One Hydra multirun per hardware layout (local launchers); user launcher overrides come last, so they win."""
    plan = write_plan(store, cells)
    return [[sys.executable, "-m", "pretrain_bench.bench.sweep_app", "-m", f"plan={plan}",
             f"cell={','.join(c.id for c in group)}", f"hydra.sweep.dir={plan.parent / 'hydra' / hardware}", *launcher]
            for hardware, group in itertools.groupby(sorted(cells, key=lambda c: c.hardware), key=lambda c: c.hardware)]


def launch(store: Store, cells: list[Cell], launcher: list[str], log) -> list[subprocess.Popen]:
    """Run the Hydra multiruns of a local launcher, one layout at a time (they share this machine's devices)."""
    for cell in cells:
        if read_status(store, cell.id) is None:
            write_status(store, cell, "pending")
    procs = []
    try:
        for cmd in hydra_commands(store, cells, launcher):
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            procs[-1].wait()
    finally:  # interrupted (SIGINT, or SIGTERM turned into SystemExit): stop the jobs, which stop their ranks
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    return procs


def launcher_params(launcher: list[str]) -> dict:
    """`hydra.launcher` as composed from configs/hydra/launcher/ and the command line's launcher overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config.CONFIG_DIR), version_base="1.3"):
        cfg = compose("sweep_job", overrides=["plan=-", "cell=-", *launcher], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    return {k: v for k, v in params.items() if k not in ("_target_", "submitit_folder", "name")}


def slurm_jobs(store: Store, cells: list[Cell], launcher: list[str]) -> list[tuple[Cell, dict]]:
    """Each cell with its job's submitit parameters, all checked against the partition before anything is submitted."""
    params = launcher_params(launcher)
    part = slurm.partition(params.get("partition"))
    return [(c, slurm.job_parameters(search.base_config(list(c.overrides)).hardware, params, part)) for c in cells]


def submit(store: Store, jobs: list[tuple[Cell, dict]], max_requeues: int) -> dict[str, str]:
    """One SLURM job per cell; each job id goes into the cell's status at once. Returns {cell id: job id}."""
    from pretrain_bench.bench.sweep_app import CellJob

    plan = write_plan(store, [cell for cell, _ in jobs])
    submitted: dict[str, str] = {}
    for cell, parameters in jobs:
        executor = slurm.executor(plan.parent / "slurm" / "%j", parameters, max_requeues, name=f"pb-{cell.id}")
        try:
            job = executor.submit(CellJob(), str(plan), cell.id)
        except Exception as e:  # noqa: BLE001 - sbatch's refusal, in its own words, whatever submitit wraps it in
            raise slurm.SubmitError(f"sbatch refused the job of {cell.label}: {str(e).strip()}", submitted) from e
        write_status(store, cell, "pending", job_id=job.job_id)
        submitted[cell.id] = job.job_id
    return submitted


def summary(store: Store, cells: list[Cell]) -> dict[str, list[dict]]:
    """Cells by state (`missing` for a cell without a status file), with the latest status of each."""
    by_state: dict[str, list[dict]] = {s: [] for s in (*STATES, "missing")}
    for cell in cells:
        status = read_status(store, cell.id) or {"cell": asdict(cell), "state": "missing"}
        by_state[status["state"]].append(status)
    return by_state
