"""`sweep` and `status`: grids of searches, local or on SLURM, resumable, with a live view."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from pretrain_bench.bench import sweep
from pretrain_bench.bench.store import Store
from pretrain_bench.cli.common import FINDING


def cmd_sweep(overrides: list[str], store_dir: str, dry_run: bool) -> int:
    """Validate the whole grid, launch only the cells that are not done, and show progress from status files."""
    cells, launcher = sweep.expand(overrides)
    store = Store(store_dir)
    store.check_writable()
    todo = sweep.missing(store, cells)
    print(f"sweep of {len(cells)} cells: {len(cells) - len(todo)} already done, {len(todo)} to launch with the "
          f"{sweep.launcher_name(launcher)} launcher; store {store.root}")
    for cell in todo:
        print(f"  {cell.id}  {cell.label}")
    if not todo or dry_run:
        return 0
    log_path = store.root / "sweeps" / "launcher.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop cleanly, as on Ctrl-C
    with open(log_path, "a") as log, sweep_progress(store, todo):
        sweep.launch(store, todo, launcher, log)
    return cmd_status(cells, store)


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


def cmd_status(cells: list, store: Store) -> int:
    """Done / running / failed / missing per cell, with the best method of the done ones."""
    by_state = sweep.summary(store, cells)
    counts = ", ".join(f"{len(v)} {k}" for k, v in by_state.items() if v)
    print(f"{len(cells)} cells: {counts}")
    for state, statuses in by_state.items():
        for st in statuses:
            cell = st["cell"]
            detail = st.get("best_method") or st.get("error") or ""
            elapsed = f" {st['elapsed_s'] / 60:.1f} min" if st.get("elapsed_s") else ""
            print(f"  {state:8s} {cell['model']} on {cell['hardware']} ({cell['methods']}){elapsed} {detail}")
    return 0 if len(by_state["done"]) == len(cells) else FINDING
