"""Sweeps: the grid expands and validates up front, launchers fill the store, re-runs launch nothing, a dead cell
fails alone, and SLURM jobs get the nodes and GPUs of their hardware."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from pretrain_bench import cli, config
from pretrain_bench.bench import sweep
from pretrain_bench.bench.store import Store

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


def sbatch_text(tmp_path, hardware: str, monkeypatch) -> str:
    """Render the sbatch script the SLURM launcher would submit for one cell, as the plugin maps parameters."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    [cell], launcher = sweep.expand(["model=pythia-1b", f"hardware={hardware}", "hydra/launcher=slurm",
                                     "hydra.launcher.partition=gpu"])
    [command] = sweep.hydra_commands(Store(tmp_path), [cell], launcher)
    overrides = [a for a in command if a.startswith("hydra")]
    with initialize_config_dir(config_dir=str(config.CONFIG_DIR), version_base="1.3"):
        cfg = compose("sweep_job", overrides=["plan=p", "cell=c", *overrides], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"_target_", "submitit_folder", "max_num_timeout"}
    monkeypatch.setattr(SlurmExecutor, "affinity", staticmethod(lambda: 1))  # no srun on this machine
    executor = AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip})
    return executor._executor._make_submission_file_text("python -m pretrain_bench.bench.sweep_app", "uid")


@pytest.mark.parametrize("hardware, nodes, gpus, cpus", [("8xh100", 1, 8, 64), ("2x8xh100", 2, 8, 64)])
def test_slurm_job_gets_the_hardware_layout(tmp_path, hardware, nodes, gpus, cpus, monkeypatch):
    text = sbatch_text(tmp_path, hardware, monkeypatch)
    for line in (f"#SBATCH --nodes={nodes}", f"#SBATCH --gpus-per-node={gpus}", "#SBATCH --ntasks-per-node=1",
                 f"#SBATCH --cpus-per-task={cpus}", "#SBATCH --time=240", "#SBATCH --partition=gpu"):
        assert line in text, text


def finished(store: Store, cells) -> dict[str, str]:
    return {c.hardware + f"/{c.overrides}": (sweep.read_status(store, c.id) or {}).get("state") for c in cells}


@pytest.mark.distributed
def test_2x2_sweep_fills_the_store_and_resumes(tmp_path, capsys):
    """Through submitit_local (each cell a separate job process, as on SLURM)."""
    args = ["sweep", *GRID, "hydra/launcher=submitit_local", "--store", str(tmp_path)]
    assert cli.main(args) == 0, capsys.readouterr()
    cells, _ = sweep.expand(GRID)
    store = Store(tmp_path)
    assert set(finished(store, cells).values()) == {"done"}
    measured = [r for r in store.records() if r["kind"] == "throughput" and r["status"] == "ok"]
    assert {(r["cell"]["hardware"], r["config"]["model"]["num_layers"]) for r in measured} == {
        ("cpu-1", 1), ("cpu-1", 2), ("cpu-2", 1), ("cpu-2", 2)}
    n = len(store.records())
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "4 already done, 0 to launch" in capsys.readouterr().out
    assert len(store.records()) == n


@pytest.mark.distributed
def test_the_basic_launcher_runs_cells_in_process(tmp_path, capsys):
    grid = [g for g in GRID if not g.startswith(("model.num_layers", "hardware"))] + ["hardware=cpu-1"]
    assert cli.main(["sweep", *grid, "--store", str(tmp_path)]) == 0, capsys.readouterr()
    [cell], _ = sweep.expand(grid)
    assert sweep.read_status(Store(tmp_path), cell.id)["state"] == "done"


@pytest.mark.distributed
def test_a_killed_worker_fails_its_cell_and_the_others_finish(tmp_path):
    grid = ["model=tiny", "hardware=cpu-1,cpu-2", "methods=naive", "strategies=[single,ddp]", "steps=5",
            "warmup_steps=1", "model.global_batch=4",
            "+env.PRETRAIN_BENCH_FAULT='kill:rank=1:step=1'"]  # rank 1 exists on cpu-2 only
    assert cli.main(["sweep", *grid, "--store", str(tmp_path)]) == 1
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

    grid = ["model=tiny", "model.num_layers=1,2", "hardware=cpu-2", "methods=naive", "strategies=[ddp]",
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
