"""Command-line options that ride along with Hydra overrides (`methods=[a,b]`, `strategies=…`, `seeds=3`):
taken out before composition, shared by the commands and the sweep."""

from __future__ import annotations


def pop_option(overrides: list[str], key: str, default: str | None) -> tuple[list[str], str | None]:
    """Take `key=value` out of the Hydra overrides: (the other overrides, the last value given or `default`)."""
    rest = [o for o in overrides if not o.startswith(f"{key}=")]
    values = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    return rest, (values[-1] if values else default)


def split_list(value: str) -> list[str]:
    """`[a, b]`, `a,b` or `a` as a list of names."""
    return [v.strip() for v in value.strip("[]").split(",")]


def method_to_overrides(method: str) -> list[str]:
    """`free-lunch` or `zero2:free-lunch` (strategy:tricks) as config overrides."""
    *strategy, tricks = method.split(":")
    return [f"tricks={tricks}", *(f"strategy={s}" for s in strategy)]
