"""Sweeps: the grid expands and validates up front, launchers fill the store, re-runs launch nothing, a dead cell
fails alone, and SLURM jobs get the nodes and GPUs of their hardware."""

from __future__ import annotations

import json
import sys

import pytest

from pretrain_bench import cli, config
from pretrain_bench.bench import search, slurm, sweep
from pretrain_bench.bench.store import Store
from pretrain_bench.cli import app

# Global batch 4: few micro-batch candidates, so each cell's search is a handful of launches.
GRID = ["model=tiny", "model.num_layers=1,2", "hardware=cpu-1,cpu-2", "methods=naive", "strategies=[single,ddp]",
        "steps=5", "warmup_steps=1", "model.global_batch=4", "search_repeats=0"]


def test_grid_expands_and_validates():
    cells, launcher = sweep.expand([*GRID, "hydra/launcher=submitit_local"])
    assert len(cells) == 4 and len({c.id for c in cells}) == 4
    assert {(c.hardware, c.strategies) for c in cells} == {("cpu-1", ("single", "ddp")), ("cpu-2", ("single", "ddp"))}
    assert launcher == ["hydra/launcher=submitit_local"]
    paper, _ = sweep.expand(["sweep=paper"])
    assert len(paper) == 16 and {c.methods for c in paper} == {"all"}


@pytest.mark.parametrize("overrides, key", [
    (["model=tiny,pythia-99m"], "model"),
    (["hardware=cpu-2", "model.global_batch=7"], "micro_batch"),
    (["methods=fastest"], "methods"),
    (["strategies=[ddp,zero9]"], "strategies"),
    (["sweep=nope"], "sweep"),
])
def test_bad_cells_fail_before_anything_launches(tmp_path, overrides, key, capsys):
    assert cli.main(["sweep", *overrides, "--store", str(tmp_path)]) == 2
    assert f"`{key}`" in capsys.readouterr().err
    assert not (tmp_path / "status").exists()


PARTITION = slurm.Partition("gpu", nodes=2, cpus=96, memory_mb=2_000_000, gpus=8)


def sbatch_text(tmp_path, hardware: str, monkeypatch, *launcher: str) -> str:
    """The sbatch script the sweep would submit for one cell, on a partition of 8-GPU, 96-core nodes."""
    from submitit.slurm.slurm import SlurmExecutor

    params = slurm.job_parameters(search.base_config([f"hardware={hardware}", "model=pythia-1b"]).hardware,
                                  sweep.launcher_params(["hydra/launcher=slurm", *launcher]), PARTITION)
    monkeypatch.setattr(SlurmExecutor, "affinity", staticmethod(lambda: 1))  # no srun on this machine
    executor = slurm.executor(tmp_path, params, 3, name="pb-cell")
    return executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")


@pytest.mark.parametrize("hardware, nodes, gpus, cpus", [("8xh100", 1, 8, 64), ("2x8xh100", 2, 8, 64),
                                                         ("1xh100", 1, 1, 8), ("cpu-2", 1, None, 96)])
def test_slurm_job_gets_the_hardware_layout(tmp_path, hardware, nodes, gpus, cpus, monkeypatch):
    text = sbatch_text(tmp_path, hardware, monkeypatch)
    for line in (f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=1", f"#SBATCH --cpus-per-task={cpus}",
                 "#SBATCH --time=240", "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@120"):
        assert line in text, text
    # A CPU layout asks for no GPU at all: a GPU-less node refuses --gpus-per-node=0.
    assert (f"#SBATCH --gpus-per-node={gpus}" in text) if gpus else ("gpus" not in text)


@pytest.mark.parametrize("launcher, key", [(["hydra.launcher.cpus_per_task=128"], "hydra.launcher.cpus_per_task"),
                                           (["hydra.launcher.mem_gb=4000"], "hydra.launcher.mem_gb"),
                                           (["hydra.launcher.timeout_min=2"], "hydra.launcher.signal_delay_s")])
def test_slurm_jobs_that_could_never_start_name_the_key(tmp_path, monkeypatch, launcher, key):
    with pytest.raises(config.ConfigError) as e:
        sbatch_text(tmp_path, "8xh100", monkeypatch, *launcher)
    assert e.value.key == key
    hw = search.base_config(["hardware=4x8xh100", "model=pythia-1b"]).hardware
    with pytest.raises(config.ConfigError, match="4 nodes; partition gpu has 2"):
        slurm.job_parameters(hw, sweep.launcher_params(["hydra/launcher=slurm"]), PARTITION)
    with pytest.raises(config.ConfigError) as e:
        slurm.job_parameters(hw, {}, slurm.Partition("small", 8, 96, 10**6, gpus=4))
    assert e.value.key == "hardware.gpus_per_node"


def test_a_two_node_cell_starts_one_torchrun_per_node_through_srun(monkeypatch):
    """Inside the job, the first node's search starts torchrun on both nodes with one srun step (--overlap, as the
    job's own task already holds the allocation) and a c10d rendezvous at the first node."""
    from pretrain_bench.bench import launch

    monkeypatch.setattr(launch, "slurm_head_node", lambda: "node-a")
    cfg = search.base_config(["hardware=2x8xh100", "model=pythia-1b"])
    [command] = launch.node_commands(cfg, ["-m", "pretrain_bench.train.worker", "cell.json", "out"], "abcd12345678")
    assert command[:6] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1",
                           sys.executable]
    assert {"--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d", "--rdzv-id=abcd12345678",
            f"--rdzv-endpoint=node-a:{29_500 + 0xabcd % 2000}"} <= set(command)


def finished(store: Store, cells) -> dict[str, str]:
    return {c.hardware + f"/{c.overrides}": (sweep.read_status(store, c.id) or {}).get("state") for c in cells}


@pytest.mark.distributed
def test_sweep_fills_the_store_and_resumes(tmp_path, capsys):
    """Through submitit_local (each cell a separate job process, as on SLURM); grids over several hardware layouts
    are run by the SLURM tests and the killed-worker test."""
    grid = [g for g in GRID if not g.startswith(("model.num_layers", "hardware"))] + ["hardware=cpu-1"]
    args = ["sweep", *grid, "hydra/launcher=submitit_local", "--store", str(tmp_path)]
    assert cli.main(args) == 0, capsys.readouterr()
    cells, _ = sweep.expand(grid)
    store = Store(tmp_path)
    assert set(finished(store, cells).values()) == {"done"}
    measured = [r for r in store.records() if r["kind"] == "throughput" and r["status"] == "ok"]
    assert {(r["cell"]["hardware"], r["cell"]["strategy"]) for r in measured} == {("cpu-1", "single")}
    n = len(store.records())
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "1 already done, 0 to launch" in capsys.readouterr().out
    assert len(store.records()) == n


@pytest.mark.distributed
def test_a_killed_worker_fails_its_cell_and_the_others_finish(tmp_path):
    """Through the basic launcher (Hydra's default: cells run in turn in this process)."""
    grid = ["model=tiny", "hardware=cpu-1,cpu-2", "methods=naive", "strategies=[single,ddp]", "steps=5",
            "warmup_steps=1", "model.global_batch=4", "search_repeats=0",
            "+env.PRETRAIN_BENCH_FAULT='kill:rank=1:step=1'"]  # rank 1 exists on cpu-2 only
    assert cli.main(["sweep", *grid, "--store", str(tmp_path)]) == 3  # a failed cell: the sweep is unfinished
    cells, _ = sweep.expand(grid)
    states = {c.hardware: sweep.read_status(Store(tmp_path), c.id) for c in cells}
    assert states["cpu-1"]["state"] == "done"
    assert states["cpu-2"]["state"] == "failed" and "rank 1 died (SIGKILL)" in states["cpu-2"]["error"]
    assert json.loads(json.dumps(states))  # status files are plain JSON


@pytest.mark.distributed
def test_interrupted_sweep_resumes_without_losing_or_duplicating_cells(tmp_path):
    """SIGTERM mid-sweep: finished cells keep their records, no rank is orphaned, a re-run finishes only the rest."""
    import signal
    import subprocess
    import sys
    import time

    grid = ["model=tiny", "model.num_layers=1,2", "hardware=cpu-1", "methods=naive", "strategies=[single]",
            "steps=5", "warmup_steps=1", "model.global_batch=4", "search_repeats=0"]
    cmd = [sys.executable, "-m", "pretrain_bench.cli", "sweep", *grid, "--store", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells, _ = sweep.expand(grid)
    store = Store(tmp_path)
    deadline = time.monotonic() + 240
    while not any((sweep.read_status(store, c.id) or {}).get("state") == "done" for c in cells):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    pattern = f"pretrain_bench.train.worker .*{tmp_path}"
    assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).stdout == b""
    done_before = {c.id for c in cells if sweep.read_status(store, c.id)["state"] == "done"}
    records_before = store.records()
    assert len(done_before) >= 1  # almost always 1: the second cell runs ~10 s after the first is done
    assert cli.main(["sweep", *grid, "--store", str(tmp_path)]) == 0
    assert all(sweep.read_status(store, c.id)["state"] == "done" for c in cells)
    records = store.records()
    assert records[:len(records_before)] == records_before  # nothing earlier was lost or rewritten
    ok = [(r["key"], r["kind"]) for r in records if r["status"] == "ok"]
    assert len(ok) == len(set(ok))  # no measurement was repeated


@pytest.mark.parametrize("command", ["run", "search", "target", "validate", "profile", "numerics", "peers", "sweep",
                                     "status", "cancel", "reproduce", "table", "export", "plot"])
def test_store_and_dash_dash_store_are_one_flag_for_every_command(command):
    def resolved(*argv: str) -> str:
        args = app.parser().parse_args([command, *argv])
        app.one_store(args)
        if command in app.COMPOSING:  # these compose a config: its `store` is the override
            return [o.split("=", 1)[1] for o in args.overrides if o.startswith("store=")][-1]
        assert not any(o.startswith("store=") for o in args.overrides)  # never a cell override of a sweep
        return args.store

    assert resolved("store=a") == resolved("--store", "a") == resolved("store=a", "--store", "a") == "a"
    with pytest.raises(config.ConfigError, match="given twice with different values"):
        resolved("store=a", "--store", "b")
    if command not in app.COMPOSING:
        assert resolved() == "bench-results"


def test_table_reads_the_store_given_as_an_override(tmp_path, capsys):
    from test_record import make

    record = make([32.0] * 5)
    Store(tmp_path).append(record)
    assert cli.main(["table", f"store={tmp_path}"]) == 0
    assert record["cell"]["model"] in capsys.readouterr().out
    assert cli.main(["table", "model=tiny", f"store={tmp_path}"]) == 2
