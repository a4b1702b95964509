"""Sweeps on a real SLURM cluster (`bash scripts/slurm.sh up`, run by .ci/run): jobs fill the store, re-runs submit
nothing, a cancelled job's cell is re-run alone, --detach/status/cancel, SIGTERM cancels a foreground sweep's jobs,
a time-limited job is requeued and resumes from the store, and impossible jobs are refused before submission."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pretrain_bench import cli
from pretrain_bench.bench import slurm, sweep
from pretrain_bench.bench.store import Store

pytestmark = [pytest.mark.slurm, pytest.mark.distributed]
# search_repeats=0: each cell's search ranks single measurements, so "nothing measured twice" can be checked.
# One thread per rank: the jobs' ranks run on every core of the node (task/none), beside the other test worker's core
# (conftest.py), and several OpenMP threads per rank would spin-wait on each other there.
CELL = ["model=tiny", "methods=naive", "steps=5", "warmup_steps=1", "model.global_batch=4", "search_repeats=0",
        "+env.OMP_NUM_THREADS=1", "hydra/launcher=slurm"]
GRID = [*CELL, "hardware=cpu-1,cpu-2", "strategies=[single,ddp]"]


def _cluster_problem() -> str | None:
    if reason := os.environ.get("PRETRAIN_BENCH_SLURM_SKIP"):
        return reason
    if shutil.which("sinfo") is None:
        return "no SLURM here (as root, `bash scripts/slurm.sh up` brings up a single-node cluster)"
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    if out.returncode or not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"SLURM has no usable node: {(out.stderr or out.stdout).strip()} (`bash scripts/slurm.sh up`)"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if problem := _cluster_problem():
        pytest.skip(problem)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def statuses(store: Store, cells) -> dict[str, dict]:
    return {c.hardware: sweep.read_status(store, c.id) for c in cells}


def test_sweep_fills_the_store_skips_active_jobs_and_reruns_a_cancelled_cell_alone(tmp_path, capsys):
    cells, _ = sweep.expand(GRID)
    store = Store(tmp_path)
    assert cli.main(["sweep", *GRID, "--detach", "--store", str(tmp_path)]) == 0
    jobs = sweep.job_ids(store, cells)
    assert len(set(jobs.values())) == 2
    # Both jobs ask for the node's 2 CPUs: one runs, the other waits. A re-run now must submit neither again.
    assert set(sweep.scheduler_states(store, cells).values()) <= set(slurm.ACTIVE)
    capsys.readouterr()
    assert cli.main(["sweep", *GRID, "--store", str(tmp_path)]) == 0
    assert "0 already done, 2 queued or running on SLURM, 0 to launch" in capsys.readouterr().out
    assert sweep.job_ids(store, cells) == jobs
    # Cancel the cpu-2 cell's job; `status --watch` follows the other to its end.
    cpu2 = next(c for c in cells if c.hardware == "cpu-2")
    slurm.cancel([jobs[cpu2.id]])
    assert cli.main(["status", *GRID, "--watch", "--store", str(tmp_path)]) == 3  # not all done: a finding
    out = capsys.readouterr().out
    assert f"[SLURM job {jobs[cpu2.id]}: cancelled]" in out and "finished]" in out
    # The re-run submits the cancelled cell alone, and waits for it.
    assert cli.main(["sweep", *GRID, "--store", str(tmp_path)]) == 0, capsys.readouterr()
    assert "1 already done, 0 queued or running on SLURM, 1 to launch" in capsys.readouterr().out
    after = sweep.job_ids(store, cells)
    assert after[cpu2.id] != jobs[cpu2.id] and {k: v for k, v in after.items() if k != cpu2.id} == {
        k: v for k, v in jobs.items() if k != cpu2.id}
    assert {s["state"] for s in statuses(store, cells).values()} == {"done"}
    assert set(sweep.scheduler_states(store, cells).values()) == {"finished"}
    measured = {r["cell"]["hardware"] for r in store.records() if r["kind"] == "throughput" and r["status"] == "ok"}
    assert measured == {"cpu-1", "cpu-2"}
    assert cli.main(["sweep", *GRID, "--store", str(tmp_path)]) == 0
    assert "2 already done, 0 queued or running on SLURM, 0 to launch" in capsys.readouterr().out
    assert sweep.job_ids(store, cells) == after


def test_sigterm_and_cancel_leave_no_job_queued(tmp_path, capsys):
    """SIGTERM to a foreground sweep cancels its jobs; `cancel` does so for a detached one."""
    grid = [*CELL, "hardware=cpu-2", "strategies=[ddp]", "model.num_layers=1,2"]
    cells, _ = sweep.expand(grid)
    store = Store(tmp_path / "fg")
    proc = subprocess.Popen([sys.executable, "-m", "pretrain_bench.cli", "sweep", *grid, "--store", str(store.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    jobs = wait_until(lambda: len(sweep.job_ids(store, cells)) == 2 and sweep.job_ids(store, cells), 60, "submission")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "cancelled SLURM jobs" in out, out
    wait_until(lambda: not set(slurm.states(list(jobs.values())).values()) & set(slurm.ACTIVE), 30, "scancel")
    squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(jobs.values()) & set(squeue)

    detached = Store(tmp_path / "bg")
    assert cli.main(["sweep", *grid, "--detach", "--store", str(detached.root)]) == 0
    capsys.readouterr()
    assert cli.main(["cancel", *grid, "--store", str(detached.root)]) == 0
    assert "cancelled SLURM jobs" in capsys.readouterr().out
    wait_until(lambda: set(sweep.scheduler_states(detached, cells).values()) == {"cancelled"}, 30, "cancelled")


def test_a_time_limited_job_is_requeued_and_finishes(tmp_path, capsys):
    """SLURM warns a job `signal_delay_s` before its time limit with USR2 (the job script's --signal=USR2@120, checked
    in test_sweep); submitit's handler then requeues the job, and the requeued job finishes the cell, reusing the
    probe the first run stored. The warning is sent here as slurmctld sends it (to the job's steps), once the probe
    is stored: slurmctld's own timer checks limits only every 30 s, which makes the moment it fires a race."""
    grid = [*CELL, "hardware=cpu-1", "strategies=[single]", "model.global_batch=16"]
    [cell], _ = sweep.expand(grid)
    store = Store(tmp_path)
    assert cli.main(["sweep", *grid, "--detach", "--store", str(tmp_path)]) == 0
    job = sweep.job_ids(store, [cell])[cell.id]
    # Once a record is stored, submitit's signal handler is in place (before it, USR2 would simply kill the job).
    wait_until(store.records, 120, "the probe's record")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    requeued(job, 240)  # the first run must also have left the node: on a loaded machine that takes minutes
    first = [(r["key"], r["kind"]) for r in store.records()]
    # No wait for the requeue's begin time, so that the test stays short.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    assert cli.main(["status", *grid, "--watch", "--store", str(tmp_path)]) == 0
    assert f"[SLURM job {job}: finished]" in capsys.readouterr().out
    records = [(r["key"], r["kind"]) for r in store.records()]
    assert records[:len(first)] == first and len(records) > len(first)
    ok = [(r["key"], r["kind"]) for r in store.records() if r["status"] == "ok"]
    assert len(ok) == len(set(ok))  # nothing measured twice
    accounting = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job], capture_output=True,
                                text=True).stdout.split()
    assert accounting[-1] == "COMPLETED" and "REQUEUED" in accounting, accounting


def requeued(job: str, timeout: float) -> None:
    """Wait until the job is back in the queue and its first run has left the node (a start before that fails with
    "Job credential revoked"); SLURM then holds it for about 2 minutes (Reason=BeginTime)."""
    def pending_again() -> bool:
        text = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
        return "Restarts=0" not in text and "JobState=PENDING" in text and set(nodes) == {"idle"}

    wait_until(pending_again, timeout, "the requeue")


def test_impossible_jobs_are_refused_before_submission_and_sbatch_errors_reach_the_terminal(tmp_path, capsys):
    def sweep_rc(*extra: str) -> tuple[int, str]:
        rc = cli.main(["sweep", *CELL, "hardware=cpu-2", *extra, "--store", str(tmp_path)])
        return rc, capsys.readouterr().err

    rc, err = sweep_rc("hydra.launcher.cpus_per_task=512")
    assert rc == 2 and "`hydra.launcher.cpus_per_task`" in err and "allowed values: 1.." in err
    rc, err = sweep_rc("hardware=8xh100", "model.global_batch=8")
    assert rc == 2 and "`hardware.gpus_per_node`" in err
    rc, err = sweep_rc("hydra.launcher.partition=nope")
    assert rc == 2 and "`hydra.launcher.partition`" in err
    rc, err = sweep_rc("hydra.launcher.constraint=no-such-feature")
    assert rc == 1 and "Invalid feature specification" in err, err
    assert not sweep.job_ids(Store(tmp_path), sweep.expand([*CELL, "hardware=cpu-2"])[0])
    # A GPU layout is scheduled on the fake GRES GPUs; on this CPU machine the cell then fails, with the reason.
    grid = [*CELL, "hardware=1xh100"]
    assert cli.main(["sweep", *grid, "--store", str(tmp_path)]) == 3  # a failed cell leaves the sweep unfinished
    [cell], _ = sweep.expand(grid)
    assert "CUDA GPUs" in sweep.read_status(Store(tmp_path), cell.id)["error"]
    assert sweep.scheduler_states(Store(tmp_path), [cell]) == {cell.id: "finished"}


def test_a_preempted_job_is_requeued_and_resumes_from_the_store(tmp_path, capsys):
    """`scontrol requeue` is what SLURM does to a job preempted with PreemptMode=REQUEUE: the job is killed (its
    ranks with it) and queued again; the new run finishes the cell without measuring anything twice."""
    grid = [*CELL, "hardware=cpu-1", "strategies=[single]"]
    [cell], _ = sweep.expand(grid)
    store = Store(tmp_path)
    assert cli.main(["sweep", *grid, "--detach", "--store", str(tmp_path)]) == 0
    job = sweep.job_ids(store, [cell])[cell.id]
    wait_until(lambda: store.records(), 120, "a first record")
    subprocess.run(["scontrol", "requeue", job], check=True)
    requeued(job, 240)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    assert cli.main(["status", *grid, "--watch", "--store", str(tmp_path)]) == 0
    assert f"[SLURM job {job}: finished]" in capsys.readouterr().out
    ok = [(r["key"], r["kind"]) for r in store.records() if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) and {kind for _, kind in ok} == {"probe", "throughput"}
    pattern = f"pretrain_bench.train.worker .*{tmp_path}"
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout == b""
