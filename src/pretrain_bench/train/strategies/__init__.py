"""One file per training backend, all behind `base.Strategy`. Imported lazily: each backend pulls in its library."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pretrain_bench.config import BenchConfig
    from pretrain_bench.train.strategies.base import Runtime, Strategy

MODULES = {"single": "single", "ddp": "ddp", "fsdp": "fsdp", "deepspeed": "zero"}


def create(cfg: BenchConfig, rt: Runtime) -> Strategy:
    module = importlib.import_module(f"pretrain_bench.train.strategies.{MODULES[cfg.strategy.backend]}")
    return module.STRATEGY(cfg, rt)
