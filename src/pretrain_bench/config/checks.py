"""The two checks every group's validation uses: a number at least a minimum, a value among the allowed ones."""

from __future__ import annotations

from typing import Any

from pretrain_bench.config.schema import ConfigError


def positive(key: str, value: int | float, minimum: int | float = 1) -> None:
    if value < minimum:
        raise ConfigError(key, f"must be ≥ {minimum}, got {value}")


def one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
