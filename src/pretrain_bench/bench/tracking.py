"""Experiment tracking: each measured record to Weights & Biases, offline unless the user configures a server.

Logged from the launching process after the record is written (the record is the source of truth), so workers and
timing are untouched. One W&B run per measurement, grouped by sweep cell.
"""

from __future__ import annotations

import os


def log_record(record: dict, group: str | None = None) -> None:
    import wandb

    c = record["cell"]
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "pretrain-bench"), group=group, mode=mode,
                     name=f"{c['model']}|{c['hardware']}|{c['strategy']}|{c['tricks']}|mb{c['micro_batch']}",
                     job_type=record["kind"], config={"cell": c, **record["config"]}, reinit="finish_previous")
    timed = (record.get("timing") or {}).get("step_s", [])
    warmup = len(record["losses"]) - len(timed)
    for step, loss in enumerate(record["losses"]):
        row = {"loss": loss, "grad_norm": record["grad_norms"][step]}
        if step >= warmup:
            row["step_s"] = timed[step - warmup]
        run.log(row, step=step)
    run.summary.update({"status": record["status"], "valid": record["valid"], "key": record["key"],
                        "tokens_per_s": (record.get("throughput") or {}).get("tokens_per_s"),
                        "mfu": (record.get("flops") or {}).get("mfu"),
                        "peak_mem_gib": (record.get("memory") or {}).get("peak_gib")})
    run.finish()
