"""Commands that measure one cell: `run`, `validate`, `profile`, `target`."""

from __future__ import annotations

import dataclasses
import json

from pretrain_bench import config
from pretrain_bench.analysis import record, report
from pretrain_bench.cli.common import CRASH, CRASHES, FINDING, exit_status, open_runner, summary
from pretrain_bench.config import cli_options as options


def cmd_run(overrides: list[str], force: bool) -> int:
    cfg = config.compose(overrides)
    store, runner = open_runner(cfg.store, force=force)
    if prior := runner.cached(cfg):
        print(f"already measured (use --force to measure again):\n{summary(prior)}")
        return 0
    c = record.cell(cfg)
    print(f"running {c['model']} on {c['hardware']} ({c['world_size']} × {cfg.hardware.gpu}) · {c['strategy']} · "
          f"{c['tricks']} · micro-batch {c['micro_batch']} × accumulation {c['grad_accum']} · "
          f"{cfg.warmup_steps} warm-up + {cfg.steps} timed steps", flush=True)
    result = runner.measure(cfg)
    print(summary(result))
    print(f"record {result['key']} appended to {store.path}")
    return exit_status([result])


def cmd_validate(overrides: list[str], force: bool, reference_steps: int) -> int:
    """Run the cell for `steps` real optimizer steps and compare the wall time with the extrapolation."""
    cfg = config.compose(overrides)
    store, runner = open_runner(cfg.store, force=force)
    reference = runner.measure(dataclasses.replace(cfg, steps=reference_steps))
    print(f"reference ({reference_steps} timed steps): {summary(reference)}", flush=True)
    if reference["status"] != "ok":
        return exit_status([reference])
    long = runner.measure(cfg, kind="validate")
    if long["status"] != "ok":
        print(f"validation run: {summary(long)}")
        return exit_status([long])
    measured = long["timing"]["timed_wall_s"]
    predicted = cfg.steps * reference["timing"]["honest_stats"]["median"]
    legacy = cfg.steps * reference["timing"]["legacy"]["stats"]["median"]
    result = {"key": reference["key"], "steps": cfg.steps, "measured_s": measured, "predicted_s": predicted,
              "error": predicted / measured - 1, "legacy_predicted_s": legacy, "legacy_error": legacy / measured - 1}
    (store.root / f"validate-{reference['key']}.json").write_text(json.dumps(result, indent=2))
    print(f"{cfg.steps} real steps took {measured:.2f} s end to end; the extrapolation from {reference_steps} "
          f"steps predicted {predicted:.2f} s: error {result['error']:+.1%} "
          f"(the reference harness's timing would predict {legacy:.2f} s: {result['legacy_error']:+.1%})")
    return 0


def cmd_profile(overrides: list[str]) -> int:
    """Profile the cell's timed steps: trace files per rank and a breakdown of where the step time goes."""
    cfg = config.compose(overrides)
    store, runner = open_runner(cfg.store, force=True)
    result = runner.measure(cfg, kind="profile")
    if result["status"] != "ok":
        print(summary(result))
        return CRASH if result["status"] in CRASHES else FINDING
    prof = result["profile"]
    wall = prof["wall_s"]
    print(f"{summary(result).splitlines()[0]}\nwhere the {cfg.steps} timed steps' {wall:.3f} s went on rank 0 "
          f"({prof['clock']}):")
    for name, secs in sorted(prof["seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:14s} {secs:9.3f} s  {secs / wall:6.1%}")
    if prof["idle_s"] is not None:
        print(f"  {'idle':14s} {prof['idle_s']:9.3f} s  {prof['idle_s'] / wall:6.1%}")
    print(f"trace (open in chrome://tracing or Perfetto): {prof['trace']}")
    return 0


def cmd_target(overrides: list[str], force: bool) -> int:
    """Train each method until the validation loss reaches target.loss, `target.seeds` times, and compare."""
    overrides, methods = options.pop_option(overrides, "methods", None)
    base = config.compose(overrides)
    if base.target.loss is None:
        raise config.ConfigError("target.loss", "is required, e.g. target.loss=3.5")
    store, runner = open_runner(base.store, force=force)
    rows, everything = [], []
    for method in ([m.strip() for m in methods.strip("[]").split(",")] if methods else [None]):
        method_overrides = [] if method is None else options.method_to_overrides(method)
        records = []
        for i in range(base.target.seeds):
            cfg = config.compose([*overrides, *method_overrides, f"seed={base.seed + i}"])
            records.append(runner.measure(cfg, kind="target"))
            print(summary(records[-1]), flush=True)
        rows.append(report.target_row(method or config.tricks_label(base.tricks), records))
        everything += records
    print(report.target_table(rows), end="")
    out = store.root / f"target-{base.model.name}-{base.hardware.name}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"summary: {out}")
    return exit_status(everything)
