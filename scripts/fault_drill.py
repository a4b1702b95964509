"""Fault drill: inject each fault several times into real cells (tiny model, 2 CPU processes) and check that the
harness ends it as documented without losing a record. Prints a markdown table (and writes it to `--out`).

    .venv/bin/python scripts/fault_drill.py --times 3 --out docs/reliability-drill.md

Every trial starts from a store that already holds a good record (measured once at the start); "records lost" counts
good records that were readable before the fault and are missing or unreadable after it. Per-trial details (status,
error, elapsed time, leftover processes) go to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pretrain_bench.bench import search, sweep
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store

BENCH = str(Path(sys.executable).with_name("pretrain-bench"))  # the installed entry point of this virtualenv
CELL = ["model=tiny", "hardware=cpu-2", "strategy=ddp", "micro_batch=2", "steps=5", "warmup_steps=1"]
BASELINE = ["model=tiny", "hardware=cpu-1", "strategy=single", "steps=5", "warmup_steps=1"]  # never a drill cell
SWEEP = ["model=tiny", "model.num_layers=1,2", "hardware=cpu-2", "methods=naive", "strategies=[ddp]", "steps=5",
         "warmup_steps=1"]
HANG_LIMIT_S = 90
EXIT_GRACE_S = 15  # interpreter start, composing the config and writing the record, around the cell's own limit


@dataclass
class Trial:
    survived: bool
    lost: int
    detail: str


def fault(spec: str) -> str:
    return f"+env.PRETRAIN_BENCH_FAULT='{spec}'"


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BENCH, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def readable(store: Store) -> dict[str, dict]:
    """Every record the store can read, by its canonical JSON (warnings about bad lines are the caller's business)."""
    return {json.dumps(r, sort_keys=True): r for r in store.records(warn=lambda message: None)}


def lost(before: dict[str, dict], store: Store) -> int:
    return len(before.keys() - readable(store).keys())


def added(before: dict[str, dict], store: Store) -> list[dict]:
    return [r for line, r in readable(store).items() if line not in before]


def orphans(root: Path) -> list[str]:
    """Processes whose command line names this trial's store (torchrun, workers), after a few seconds to exit."""
    deadline = time.monotonic() + 5
    while True:
        found = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True).stdout.splitlines()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def seeded(root: Path, baseline: Path) -> Store:
    """A fresh store holding the baseline's good record(s)."""
    store = Store(root / "store")
    store.root.mkdir(parents=True)
    shutil.copy(baseline / "records.jsonl", store.path)
    return store


def one_failed_run(root: Path, baseline: Path, overrides: list[str], status: str, words: str,
                   within_s: float = float("inf")) -> Trial:
    """Run one faulty cell: exit 1 within `within_s`, one new record with `status` whose error contains `words`, and
    no leftover process."""
    store = seeded(root, baseline)
    before = readable(store)
    started = time.monotonic()
    done = bench("run", *overrides, f"store={store.root}", cwd=root)
    elapsed = time.monotonic() - started
    new = added(before, store)
    left = orphans(store.root)
    got = f"exit {done.returncode}, {len(new)} new record(s)"
    if len(new) == 1:
        got += f": status {new[0]['status']}: {new[0]['error']}"
    elif done.stderr.strip():
        got += f"; stderr ends: {done.stderr.strip().splitlines()[-1]}"
    survived = (done.returncode == 1 and len(new) == 1 and new[0]["status"] == status and words in new[0]["error"]
                and elapsed <= within_s and not left)
    return Trial(survived, lost(before, store), f"{got}; {elapsed:.0f} s; leftover processes: {left or 'none'}")


def drill_kill(root: Path, baseline: Path) -> Trial:
    return one_failed_run(root, baseline, [*CELL, fault("kill:rank=1:step=2")], "error", "rank 1 died (SIGKILL)")


def drill_hang(root: Path, baseline: Path) -> Trial:
    return one_failed_run(root, baseline, [*CELL, "collective_timeout_s=10", f"timeout_s={HANG_LIMIT_S}",
                                           fault("hang:rank=1:step=2")], "timeout", "",
                          within_s=HANG_LIMIT_S + EXIT_GRACE_S)


def drill_nan(root: Path, baseline: Path) -> Trial:
    return one_failed_run(root, baseline, [*CELL, fault("nan:step=3")], "diverged", "at step 3")


def drill_oom(root: Path, baseline: Path) -> Trial:
    """An OOM run is recorded as `oom`; a method search on the same cell probes below it and settles on 2."""
    oom = fault("oom:micro_batch_above=2")
    run = one_failed_run(root, baseline, [*CELL, "micro_batch=4", oom], "oom", "micro-batch 4 above the cap 2")
    store = Store(root / "store")
    before = readable(store)
    overrides = [*CELL[:2], "steps=5", "warmup_steps=1", f"store={store.root}", oom]
    base = search.base_config(overrides)
    kept, pruned = search.candidates(base, "naive", ["ddp"])
    without_ac = [m for m in kept if not m.ac]  # checkpointing would only repeat the same probes
    result = search.Search(Runner(store), overrides, base).run(without_ac, pruned)
    probes = sorted((r["cell"]["micro_batch"], r["status"]) for r in added(before, store) if r["kind"] == "probe")
    best = result.best
    found = best is not None and best.micro_batch == 2 and (4, "oom") in probes
    detail = f"{run.detail}; search probes {probes}, best micro-batch {best and best.micro_batch}"
    return Trial(run.survived and found, run.lost + lost(before, store), detail)


def first_done(store: Store, cells: list[sweep.Cell], proc: subprocess.Popen, limit_s: float) -> bool:
    """Wait until a cell of a running sweep is done (False if the sweep exits or the limit passes first)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any((sweep.read_status(store, c.id) or {}).get("state") == "done" for c in cells):
            return True
        time.sleep(0.5)
    return False


def drill_sweep_sigterm(root: Path, baseline: Path) -> Trial:
    """SIGTERM once one cell is done: its records stay, no rank is left, a re-run launches only the other cell."""
    store = seeded(root, baseline)
    cells, _ = sweep.expand(SWEEP)
    with open(root / "sweep.log", "w") as log:
        proc = subprocess.Popen([BENCH, "sweep", *SWEEP, "--store", str(store.root)], cwd=root, stdout=log,
                                stderr=subprocess.STDOUT)
        ready = first_done(store, cells, proc, limit_s=300)
        before = readable(store)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    left = orphans(store.root)
    done = [c for c in cells if (sweep.read_status(store, c.id) or {}).get("state") == "done"]
    rerun = bench("sweep", *SWEEP, "--store", str(store.root), cwd=root)
    finished = all((sweep.read_status(store, c.id) or {}).get("state") == "done" for c in cells)
    ok = [(r["key"], r["kind"]) for r in store.records(warn=lambda message: None) if r["status"] == "ok"]
    resumed = f"{len(done)} already done, {len(cells) - len(done)} to launch" in rerun.stdout
    survived = (ready and code != 0 and not left and len(done) == 1 and resumed and rerun.returncode == 0
                and finished and len(ok) == len(set(ok)))
    detail = (f"cell done before SIGTERM: {ready}; sweep exit {code}; leftover processes: {left or 'none'}; "
              f"re-run exit {rerun.returncode}: {rerun.stdout.splitlines()[0] if rerun.stdout else rerun.stderr}; "
              f"all cells done: {finished}; repeated ok measurements: {len(ok) - len(set(ok))}")
    return Trial(survived, lost(before, store), detail)


def drill_torn_line(root: Path, baseline: Path) -> Trial:
    """A writer died mid-line: the next append starts a new line, reading skips and reports the torn one."""
    store = seeded(root, baseline)
    before = readable(store)
    good = next(iter(before.values()))
    half = json.dumps({**good, "key": "torn"})
    with open(store.path, "a") as f:
        f.write(half[: len(half) // 2])
    store.append({**good, "key": "after-torn"})
    warnings: list[str] = []
    keys = [r["key"] for r in store.records(warn=warnings.append)]
    survived = "after-torn" in keys and "torn" not in keys and len(warnings) == 1
    return Trial(survived, lost(before, store), f"warnings: {warnings}")


def drill_concurrent(root: Path, baseline: Path) -> Trial:
    """Two `run` processes on different cells append to one store at the same time: both records land."""
    store = seeded(root, baseline)
    before = readable(store)
    with open(root / "runs.log", "w") as log:
        procs = [subprocess.Popen([BENCH, "run", *CELL, f"model.num_layers={n}", f"store={store.root}"], cwd=root,
                                  stdout=log, stderr=subprocess.STDOUT) for n in (1, 3)]
        codes = [p.wait(timeout=600) for p in procs]
    layers = sorted(r["config"]["model"]["num_layers"] for r in added(before, store) if r["status"] == "ok")
    return Trial(codes == [0, 0] and layers == [1, 3], lost(before, store),
                 f"exit codes {codes}; new ok records for num_layers {layers}")


DRILLS: dict[str, tuple[str, Callable[[Path, Path], Trial]]] = {
    "kill": ("rank 1 SIGKILLed at step 2 (`kill:rank=1:step=2`)", drill_kill),
    "hang": ("hung collective (`hang:rank=1:step=2`, collective_timeout_s=10, timeout_s=90)", drill_hang),
    "nan": ("NaN loss at step 3 (`nan:step=3`)", drill_nan),
    "oom": ("OOM above micro-batch 2 (`oom:micro_batch_above=2`) at micro_batch=4, then a method search",
            drill_oom),
    "sigterm": ("SIGTERM to a running `pretrain-bench sweep` (2 cells), then the same sweep again",
                drill_sweep_sigterm),
    "torn": ("torn last line in records.jsonl, then an append", drill_torn_line),
    "concurrent": ("two `pretrain-bench run` processes writing one store at once", drill_concurrent),
}


def make_baseline(root: Path) -> Path:
    """The good record every trial's store starts with: one real single-process cell."""
    root.mkdir()
    done = bench("run", *BASELINE, f"store={root}", cwd=root)
    if done.returncode != 0:
        sys.exit(f"baseline run failed:\n{done.stdout}\n{done.stderr}")
    return root


def header(times: int) -> str:
    import torch

    command = " ".join(["scripts/fault_drill.py", *sys.argv[1:]])
    return (f"# Fault drill\n\n`.venv/bin/python {command}`, {datetime.date.today().isoformat()}, "
            f"{platform.machine()} machine with {os.cpu_count()} CPU cores, torch {torch.__version__}; tiny model on "
            f"2 CPU processes (gloo), each fault tried {times} times. Survived: the outcome was the documented one "
            "(status and error, no leftover process, the sweep resumed) and no record was lost. Records lost: good "
            "records readable before the fault and missing or unreadable after it.\n\n")


def table(rows: list[tuple[str, list[Trial]]]) -> str:
    lines = ["| fault injected | times tried | survived | records lost |", "|---|---|---|---|"]
    lines += [f"| {name} | {len(trials)} | {sum(t.survived for t in trials)}/{len(trials)} | "
              f"{sum(t.lost for t in trials)} |" for name, trials in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--times", type=int, default=3, help="trials per fault")
    p.add_argument("--only", nargs="*", choices=DRILLS, default=list(DRILLS), help="faults to drill")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        baseline = make_baseline(Path(tmp, "baseline"))
        for name in args.only:
            label, drill = DRILLS[name]
            trials = []
            for i in range(args.times):
                root = Path(tmp, f"{name}-{i}")
                root.mkdir()
                trials.append(drill(root, baseline))
                verdict = "survived" if trials[-1].survived else "FAILED"
                print(f"{name} #{i + 1}: {verdict}, {trials[-1].lost} lost; {trials[-1].detail}", file=sys.stderr,
                      flush=True)
            rows.append((label, trials))
    text = header(args.times) + table(rows)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0 if all(t.survived and not t.lost for _, trials in rows for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
