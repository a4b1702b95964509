"""Commands that measure one cell: `run`, `validate`, `profile`, `target`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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


# A profiler trace grows with every kernel it records: a few GB for a 1B model over ten steps at the recipe's
# accumulation. The profile records this many steps after warm-up, at this much accumulation at most (the step's
# anatomy, which repeats per micro-batch, is the same; the record's global batch says what ran).
PROFILE_STEPS = 2
PROFILE_MAX_ACCUM = 2


def profile_config(cfg: config.BenchConfig) -> config.BenchConfig:
    accum = min(cfg.grad_accum, PROFILE_MAX_ACCUM)
    model = dataclasses.replace(cfg.model, global_batch=cfg.world_size * cfg.micro_batch * accum)
    return dataclasses.replace(cfg, model=model, steps=PROFILE_STEPS, warmup_steps=max(1, min(cfg.warmup_steps, 2)))


def cmd_profile(overrides: list[str]) -> int:
    """Profile two steps of the cell at a capped accumulation: trace files per rank and a breakdown of where the step
    time goes."""
    full = config.compose(overrides)
    cfg = profile_config(full)
    store, runner = open_runner(cfg.store, force=True)
    capped = (f" (the cell's is {full.grad_accum}: global batch {cfg.model.global_batch} instead of "
              f"{full.model.global_batch})" if cfg.grad_accum != full.grad_accum else "")
    print(f"profiling {cfg.steps} steps after {cfg.warmup_steps} warm-up at micro-batch {cfg.micro_batch} × "
          f"accumulation {cfg.grad_accum}{capped}", flush=True)
    result = runner.measure(cfg, kind="profile")
    if result["status"] != "ok":
        print(summary(result))
        return CRASH if result["status"] in CRASHES else FINDING
    prof = result["profile"]
    wall = prof["wall_s"]
    print(f"{summary(result).splitlines()[0]}\nwhere the {cfg.steps} profiled steps' {wall:.3f} s went on rank 0 "
          f"({prof['clock']}):")
    for name, secs in sorted(prof["seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:14s} {secs:9.3f} s  {secs / wall:6.1%}")
    if prof["idle_s"] is not None:
        print(f"  {'idle':14s} {prof['idle_s']:9.3f} s  {prof['idle_s'] / wall:6.1%}")
    traces = sorted(Path(prof["trace"]).parent.glob("trace_rank*.json"))
    print("traces (one per rank):")
    for trace in traces:
        print(f"  {trace}  {trace.stat().st_size / 2**20:,.1f} MiB")
    print("open one: drag it into https://ui.perfetto.dev (nothing is uploaded; it runs in the browser) or load it "
          "in chrome://tracing")
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
