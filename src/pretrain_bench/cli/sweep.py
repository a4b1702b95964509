"""`sweep`, `status` and `cancel`: grids of searches, local or on SLURM, resumable, with a live view."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time

from pretrain_bench import config
from pretrain_bench.bench import slurm, sweep
from pretrain_bench.bench.store import Store
from pretrain_bench.cli.common import FINDING

POLL_S = 5.0


def cmd_sweep(overrides: list[str], store_dir: str, dry_run: bool, detach: bool) -> int:
    """Validate the whole grid, launch only the cells that are not done (nor queued or running on SLURM), and show
    progress from the status files."""
    cells, launcher = sweep.expand(overrides)
    on_slurm = sweep.is_slurm(launcher)
    if detach and not on_slurm:
        raise config.ConfigError("--detach", "only a cluster launcher can run a sweep without this process; "
                                             "allowed with: hydra/launcher=slurm")
    store = Store(store_dir)
    store.check_writable()
    scheduler = sweep.scheduler_states(store, cells)
    todo = sweep.missing(store, cells, scheduler)
    active = [c for c in cells if scheduler.get(c.id) in slurm.ACTIVE]
    jobs = sweep.slurm_jobs(store, todo, launcher) if on_slurm and todo else []  # checked before anything starts
    queued = f"{len(active)} queued or running on SLURM, " if on_slurm or active else ""
    print(f"sweep of {len(cells)} cells: {len(cells) - len(todo) - len(active)} already done, {queued}{len(todo)} to "
          f"launch with the {sweep.launcher_name(launcher)} launcher; store {store.root}")
    resources = {cell.id: _resources(params) for cell, params in jobs}
    for cell in todo:
        print(f"  {cell.id}  {cell.label}{resources.get(cell.id, '')}")
    if not todo or dry_run:
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop cleanly, as on Ctrl-C
    if on_slurm:
        return _sweep_on_slurm(store, cells, jobs, sweep.launcher_params(launcher).get("max_num_timeout", 0), detach)
    log_path = store.root / "sweeps" / "launcher.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, sweep_progress(store, todo):
        procs = sweep.launch(store, todo, launcher, log)
    if failed := [p.returncode for p in procs if p.returncode]:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        print(f"the {sweep.launcher_name(launcher)} launcher exited with code {failed[0]}; {log_path} ends:\n{tail}",
              file=sys.stderr)
    return cmd_status(cells, store)


def _resources(params: dict) -> str:
    gpus = f", {params['gpus_per_node']} GPUs" if params.get("gpus_per_node") else ", no GPU"
    return (f"  [SLURM: {params['nodes']} node(s){gpus}, {params['cpus_per_task']} CPUs, {params['timeout_min']} min, "
            f"partition {params['partition']}]")


def _sweep_on_slurm(store: Store, cells: list, jobs: list, max_requeues: int, detach: bool) -> int:
    """Submit one job per cell; then return (detach) or follow the jobs, cancelling them if interrupted."""
    try:
        submitted = sweep.submit(store, jobs, max_requeues)
    except slurm.SubmitError as e:
        slurm.cancel(list(e.submitted.values()))  # all or nothing: no half-submitted sweep left behind
        print(f"pretrain-bench: {e}", file=sys.stderr)
        return 1
    ids = list(submitted.values())
    print(f"submitted {len(ids)} SLURM jobs: {' '.join(ids)}", flush=True)
    if detach:
        print("follow with `pretrain-bench status <the same overrides> --watch`; stop with `pretrain-bench cancel "
              "<the same overrides>`")
        return 0
    try:
        with sweep_progress(store, [c for c in cells if c.id in submitted]):
            while _any_active(ids):
                time.sleep(POLL_S)
    except (KeyboardInterrupt, SystemExit):
        slurm.cancel(ids)
        print(f"\ninterrupted: cancelled SLURM jobs {' '.join(ids)}", file=sys.stderr)
        raise
    return cmd_status(cells, store)


def _any_active(ids: list[str]) -> bool:
    try:
        return any(state in slurm.ACTIVE for state in slurm.states(ids).values())
    except (RuntimeError, subprocess.TimeoutExpired) as e:  # a busy or restarting controller: ask again
        print(f"pretrain-bench: {e}; retrying", file=sys.stderr)
        return True


def cmd_cancel(overrides: list[str], store_dir: str) -> int:
    """scancel the queued and running jobs of a (detached) sweep."""
    cells, store = sweep.expand(overrides)[0], Store(store_dir)
    scheduler = sweep.scheduler_states(store, cells)
    jobs = sweep.job_ids(store, cells)
    ids = [jobs[c.id] for c in cells if scheduler.get(c.id) in slurm.ACTIVE]
    slurm.cancel(ids)
    print(f"cancelled SLURM jobs: {' '.join(ids)}" if ids else "no job of this sweep is queued or running")
    return 0


@contextlib.contextmanager
def sweep_progress(store: Store, cells: list):
    """A live view while the sweep runs: cells finished, running and failed, elapsed and estimated remaining time
    (from the cells' status files, so it works the same for local and SLURM launchers)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn(), TextColumn("{task.description}"))
    stop = threading.Event()
    with Progress(*columns) as bar:
        task = bar.add_task("", total=len(cells))

        def refresh() -> None:
            while not stop.wait(2.0):
                by_state = sweep.summary(store, cells)
                running = ", ".join(f"{s['cell']['model']} on {s['cell']['hardware']}" for s in by_state["running"])
                bar.update(task, completed=len(by_state["done"]) + len(by_state["failed"]),
                           description=f"{len(by_state['failed'])} failed · running: {running or '—'}")

        watcher = threading.Thread(target=refresh, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()


def cmd_status_of(overrides: list[str], store_dir: str, watch: bool) -> int:
    return cmd_status(sweep.expand(overrides)[0], Store(store_dir), watch)


def cmd_status(cells: list, store: Store, watch: bool = False) -> int:
    """Our state per cell (done / running / failed / …) beside the scheduler's (queued, running, finished, failed,
    cancelled, timed out) with the job id; `watch` repeats it whenever it changes, until no job is queued or
    running."""
    shown = None
    while True:
        scheduler = sweep.scheduler_states(store, cells)
        text, done = _status_text(cells, store, scheduler)
        if text != shown:
            print(text, flush=True)
            shown = text
        if not watch or not any(s in slurm.ACTIVE for s in scheduler.values()):
            return 0 if done == len(cells) else FINDING
        time.sleep(POLL_S)


def _status_text(cells: list, store: Store, scheduler: dict[str, str]) -> tuple[str, int]:
    by_state = sweep.summary(store, cells)
    lines = [f"{len(cells)} cells: " + ", ".join(f"{len(v)} {k}" for k, v in by_state.items() if v)]
    for state, statuses in by_state.items():
        for st in statuses:
            cell = st["cell"]
            job = f" [SLURM job {st['job_id']}: {scheduler.get(cell['id'], 'unknown')}]" if st.get("job_id") else ""
            detail = st.get("best_method") or st.get("error") or ""
            elapsed = f" {st['elapsed_s'] / 60:.1f} min" if st.get("elapsed_s") else ""
            lines.append(f"  {state:8s} {cell['model']} on {cell['hardware']} ({cell['methods']}){job}{elapsed} "
                         f"{detail}")
    return "\n".join(lines), len(by_state["done"])
