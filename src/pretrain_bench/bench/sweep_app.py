"""What a sweep job runs: the method search of one (model, hardware) cell of a plan.

Local launchers (basic, submitit_local) start the Hydra application here as `python -m pretrain_bench.bench.sweep_app
-m plan=… cell=a,b,…`; on SLURM, submitit runs `CellJob` in each cell's job. A job never raises: whatever happens
becomes the cell's status, so one failing cell cannot abort the sweep. In a multi-node SLURM job every node runs the
job; only the first drives the search (its cells start torchrun on all nodes through srun), the others return.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pretrain_bench import config
from pretrain_bench.bench import search, sweep
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store


def node_rank() -> int:
    return int(os.environ.get("SLURM_NODEID", os.environ.get("SUBMITIT_GLOBAL_RANK", "0")))


def run_cell(cell: sweep.Cell, store: Store) -> None:
    started = time.monotonic()
    sweep.write_status(store, cell, "running", started=time.time())
    try:
        base = search.base_config(list(cell.overrides))
        methods, pruned = search.candidates(base, cell.methods, list(cell.strategies))
        searcher = search.Search(Runner(store, group=cell.id), list(cell.overrides), base)
        methods, screened = searcher.screen(methods)
        result = searcher.run(methods, pruned + screened)
        best = result.best
        failures = [f"{o.method.label}: {o.reason}" for o in result.outcomes if o.status in ("error", "oom")]
        sweep.write_status(store, cell, "done" if best else "failed", elapsed_s=time.monotonic() - started,
                           best_key=best.record["key"] if best else None,
                           best_method=best.method.label if best else None,
                           error=None if best else "; ".join(failures) or "no method fits")
    except Exception as exc:  # noqa: BLE001 - recorded as the cell's status; the sweep goes on
        sweep.write_status(store, cell, "failed", elapsed_s=time.monotonic() - started,
                           error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=10))


def run_planned(plan_path: str, cell_id: str) -> None:
    if node_rank() != 0:
        return
    plan = json.loads(Path(plan_path).read_text())
    spec = plan["cells"][cell_id]
    cell = sweep.Cell(**{**spec, "overrides": tuple(spec["overrides"]), "strategies": tuple(spec["strategies"])})
    run_cell(cell, Store(plan["store"]))


class CellJob:
    """A cell's SLURM job (a submitit callable). At a time limit or a preemption submitit calls `checkpoint` and
    requeues the job: the requeued job runs the cell's search again, which reuses every probe and measurement
    already in the store, so only the interrupted measurement is repeated."""

    def __call__(self, plan_path: str, cell_id: str) -> None:
        run_planned(plan_path, cell_id)

    def checkpoint(self, plan_path: str, cell_id: str):
        import submitit

        return submitit.helpers.DelayedSubmission(self, plan_path, cell_id)


@hydra.main(config_path=str(config.CONFIG_DIR), config_name="sweep_job", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_planned(str(cfg.plan), str(cfg.cell))


if __name__ == "__main__":
    main()
