"""Commands that read a store: `table`, `export`, `plot`, `reproduce`."""

from __future__ import annotations

import sys
from pathlib import Path

from pretrain_bench import config
from pretrain_bench.analysis import export, plot, record, report, reproduce
from pretrain_bench.bench.store import Store
from pretrain_bench.cli.common import BAD_INPUT, FINDING, OK, summary


def cmd_table(store: str, fmt: str, filters: dict[str, str | None]) -> int:
    records = report.select(list(Store(store).latest().values()), **filters)
    if not records:
        wanted = ", ".join(f"{k}={v}" for k, v in filters.items() if v)
        print(f"no records in {store}" + (f" with {wanted}" if wanted else ""), file=sys.stderr)
        return BAD_INPUT
    print(report.table(records, fmt, history=Store(store).records(), store_dir=store), end="")
    return OK


EXPORT_SELECTORS = ("model", "hardware", "strategy", "tricks", "key")


def cmd_export(overrides: list[str], store_dir: str, to: str, out_dir: str) -> int:
    """Write a measured method as a ready-to-use training config: the record `key=…`, or the fastest valid one of a
    model and hardware, narrowed by `strategy=…` and `tricks=…` (names as the table shows them)."""
    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    if set(given) - set(EXPORT_SELECTORS) or len(given) != len(overrides):
        allowed = ", ".join(f"{k}=" for k in EXPORT_SELECTORS)
        raise config.ConfigError("overrides", f"export selects a record with {allowed}; got {' '.join(overrides)}")
    records = list(Store(store_dir).latest().values())
    if "key" in given:
        try:
            chosen = export.chosen(records, given["key"])
        except ValueError as e:
            raise config.ConfigError("key", str(e)) from None
    elif {"model", "hardware"} <= set(given):
        narrowed = report.select(records, strategy=given.get("strategy"), tricks=given.get("tricks"))
        chosen = record.best_record(narrowed, given["model"], given["hardware"])
    else:
        raise config.ConfigError("overrides", "export needs model=<name> hardware=<name> (e.g. model=pythia-1b "
                                              "hardware=1xh100, optionally strategy=… tricks=…) or key=<record key>")
    if chosen is None:
        wanted = " ".join(f"{k}={v}" for k, v in given.items())
        print(f"no valid measurement with {wanted} in {store_dir}: run `pretrain-bench search model={given['model']} "
              f"hardware={given['hardware']}` first, or see `pretrain-bench table --store {store_dir}`",
              file=sys.stderr)
        return BAD_INPUT
    try:
        path, notes = export.write_export(chosen, to, out_dir)
    except ValueError as e:  # e.g. a DeepSpeed config for a method that is not DeepSpeed
        raise config.ConfigError("--to", str(e)) from None
    print(f"{summary(chosen)}\nwritten: {path}\nnotes:   {notes}\nlaunch:  {export.launch_command(chosen, to)}")
    return OK


def cmd_plot(store_dir: str, out_dir: str) -> int:
    """Days vs GPU count, trick speed-ups over naive, memory vs micro-batch: each PNG that the records allow."""
    records = list(Store(store_dir).latest().values())
    written = 0
    for name, draw in (("days_vs_gpus", plot.days_vs_gpus), ("trick_speedups", plot.trick_speedups),
                       ("memory_vs_micro_batch", plot.memory_vs_micro_batch)):
        try:
            print(f"written: {draw(records, Path(out_dir) / f'{name}.png')}")
            written += 1
        except ValueError as e:
            print(f"skipped {name}: {e}", file=sys.stderr)
    return OK if written else FINDING


def cmd_reproduce(store_dir: str, claims_path: str) -> int:
    """Published claims: the MFU they imply, a verdict, and our measured (or peak-scaled) figure beside them."""
    records = list(Store(store_dir).latest().values())
    print(reproduce.render(reproduce.rows(reproduce.load_claims(claims_path), records)), end="")
    print("\nStep time as measured (honest) and as the reference harness would read it (legacy), same steps:\n")
    print(report.timing_table(records), end="")
    return 0
