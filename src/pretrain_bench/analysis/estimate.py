"""Time-to-target for a model's full recipe, from measured records. No torch.

Total time is a sum of step times, so the point estimate is recipe steps × the *mean* step time: the record's timed
wall clock ÷ its timed steps (what happens between steps included). One run's step times say nothing about how a
fresh run would differ (another process, another allocator state, another node), so the interval comes from repeated
fresh runs of the same cell: the lowest and highest of their estimates (None with a single run). Not included: data
loading beyond the batch gather, evaluation, checkpointing and restarts.
Costs: cloud = GPU-hours × the hourly price; purchase = the fraction of a 5-year GPU life the run uses × the
purchase price. The analytic floor is the recipe's FLOPs at 100 % of the dense peak: no run can beat it.
"""

from __future__ import annotations

from typing import Any

from pretrain_bench.spec import gpus

AMORTISATION_YEARS = 5
SECONDS_PER_DAY = 86_400


def prices(record: dict[str, Any]) -> tuple[float | None, float | None]:
    """(USD per GPU-hour, USD per GPU): the hardware config's overrides, else the catalogue's defaults."""
    hw = record["config"]["hardware"]
    spec = gpus.gpu(record["env"].get("gpu_sku") or hw["gpu"])
    hourly = hw.get("price_per_hour") if hw.get("price_per_hour") is not None else spec.price_per_hour
    purchase = hw.get("purchase_price") if hw.get("purchase_price") is not None else spec.purchase_price
    return hourly, purchase


def mean_step_s(record: dict[str, Any]) -> float:
    """Timed wall clock ÷ timed steps: the mean step, gaps between steps included."""
    timing = record["timing"]
    return timing["timed_wall_s"] / timing["timed_steps"]


def recipe_estimate(record: dict[str, Any], repeats: list[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """Days, GPU-days and costs to run the record's model recipe to the end; None for records without timing.

    `repeats`: other records (the same cell measured in fresh runs, any order, `record` itself may be among them);
    with two or more ok runs in all, `days_low`/`days_high` are their lowest and highest estimates."""
    if record["status"] != "ok" or not record.get("timing"):
        return None
    recipe_steps = record["config"]["model"]["recipe"]["steps"]
    world = record["cell"]["world_size"]
    step_s = mean_step_s(record)
    days = recipe_steps * step_s / SECONDS_PER_DAY
    # One entry per run: the same run read twice from a store (latest() and records() build separate dicts) is one
    # run, so runs are told apart by what they measured, not by object identity.
    runs = {(r["created"], r["timing"]["timed_wall_s"], tuple(r["timing"]["step_s"])): r for r in (record, *repeats)
            if r["key"] == record["key"] and r["kind"] == record["kind"] and r["status"] == "ok" and r.get("timing")}
    run_days = [recipe_steps * mean_step_s(r) / SECONDS_PER_DAY for r in runs.values()]
    gpu_days = days * world
    hourly, purchase = prices(record)
    flops = record["flops"]
    tokens = recipe_steps * record["cell"]["global_batch"] * round(
        record["throughput"]["tokens_per_s"] / record["throughput"]["sequences_per_s"])  # images for vision
    floor_days = None
    if flops["peak_per_device"]:
        floor_days = tokens * flops["per_token"] / (flops["peak_per_device"] * world) / SECONDS_PER_DAY
    return {
        "recipe_steps": recipe_steps, "tokens": tokens, "mean_step_s": step_s,
        "days": days, "runs": len(run_days),
        "days_low": min(run_days) if len(run_days) > 1 else None,
        "days_high": max(run_days) if len(run_days) > 1 else None,
        "gpu_days": gpu_days,
        "cost_cloud_usd": None if hourly is None else gpu_days * 24 * hourly,
        "cost_purchase_usd": None if purchase is None else gpu_days / (AMORTISATION_YEARS * 365) * purchase,
        "floor_days": floor_days, "mfu": flops["mfu"],
    }
