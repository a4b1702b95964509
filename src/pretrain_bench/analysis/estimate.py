"""Time-to-target for a model's full recipe, from one measured record. No torch.

days = recipe steps × measured median step time; the interval uses the p25 and p75 step times (the record's IQR).
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


def recipe_estimate(record: dict[str, Any]) -> dict[str, Any] | None:
    """Days, GPU-days and costs to run the record's model recipe to the end; None for records without timing."""
    if record["status"] != "ok" or not record.get("timing"):
        return None
    recipe_steps = record["config"]["model"]["recipe"]["steps"]
    world = record["cell"]["world_size"]
    stats = record["timing"]["stats"]
    days = recipe_steps * stats["median"] / SECONDS_PER_DAY
    gpu_days = days * world
    hourly, purchase = prices(record)
    flops = record["flops"]
    tokens = recipe_steps * round(record["throughput"]["tokens_per_s"] * stats["median"])  # images for vision
    floor_days = None
    if flops["peak_per_device"]:
        floor_days = tokens * flops["per_token"] / (flops["peak_per_device"] * world) / SECONDS_PER_DAY
    return {
        "recipe_steps": recipe_steps, "tokens": tokens,
        "days": days, "days_low": recipe_steps * stats["p25"] / SECONDS_PER_DAY,
        "days_high": recipe_steps * stats["p75"] / SECONDS_PER_DAY,
        "gpu_days": gpu_days,
        "cost_cloud_usd": None if hourly is None else gpu_days * 24 * hourly,
        "cost_purchase_usd": None if purchase is None else gpu_days / (AMORTISATION_YEARS * 365) * purchase,
        "floor_days": floor_days, "mfu": flops["mfu"],
    }
