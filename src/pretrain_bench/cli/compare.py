"""Commands that compare methods or frameworks on one cell: `numerics` (loss curves against the baseline's seed
spread) and `peers` (the HF Trainer against our best method)."""

from __future__ import annotations

import sys

from pretrain_bench import config
from pretrain_bench.analysis import numerics, peers, plot, record, report
from pretrain_bench.cli.common import CRASH, FINDING, OK, exit_status, open_runner, summary
from pretrain_bench.config import cli_options as options


def cmd_numerics(overrides: list[str], force: bool) -> int:
    """Loss curves of faster methods against the baseline's seed-to-seed spread, with a table and a plot."""
    overrides, methods = options.pop_option(overrides, "methods", None)
    overrides, baseline = options.pop_option(overrides, "baseline", None)
    overrides, seeds = options.pop_option(overrides, "seeds", "3")
    if not methods:
        raise config.ConfigError("methods", "name the methods to compare, e.g. methods=[free-lunch-flce,zero2:bf16]")
    if not seeds.isdigit() or int(seeds) < 2:
        raise config.ConfigError("seeds", f"the baseline's spread needs at least 2 seeds, got {seeds!r}")
    baseline_overrides = options.method_to_overrides(baseline) if baseline else []
    base = config.compose([*overrides, *baseline_overrides])
    store, runner = open_runner(base.store, force=force)
    label = baseline or config.tricks_label(base.tricks)

    def measure(method_overrides: list[str], seed: int) -> dict:
        r = runner.measure(config.compose([*overrides, *method_overrides, f"seed={seed}"]))
        print(summary(r), flush=True)
        return r

    base_all = [measure(baseline_overrides, base.seed + i) for i in range(int(seeds))]
    base_runs = [r for r in base_all if r["status"] == "ok"]
    if len(base_runs) < 2:
        print(f"the baseline {label} has {len(base_runs)} ok runs; its spread needs 2", file=sys.stderr)
        return exit_status(base_all)
    curves = [r["losses"] for r in base_runs]
    window = min(numerics.WINDOW, len(curves[0]))
    verdicts, method_curves = [], {}
    speeds = {label: report.rate(base_runs[0]["throughput"], unit=True)}
    failed = []
    for method in [m.strip() for m in methods.strip("[]").split(",")]:
        r = measure(options.method_to_overrides(method), base.seed)
        if r["status"] != "ok":
            failed.append(r)
            continue
        verdicts.append(numerics.judge(method, r["losses"], curves, window))
        speeds[method], method_curves[method] = report.rate(r["throughput"], unit=True), r["losses"]
    name = store.root / f"numerics-{base.model.name}-{base.hardware.name}"
    title = f"Loss curves: {base.model.name} on {base.hardware.name}, {len(curves[0])} steps"
    table = numerics.markdown(title, label, len(curves), window, verdicts, speeds)
    name.with_suffix(".md").write_text(table)
    figure = plot.loss_curves({label: curves}, method_curves, name.with_suffix(".png"), title)
    print(f"{table}written: {name.with_suffix('.md')}, {figure}")
    if failed:
        return exit_status(failed)
    return OK if all(v.within_spread for v in verdicts) else FINDING


def cmd_peers(overrides: list[str]) -> int:
    """HF Trainer vs our best method on the same cell, alternating runs; a table with the ratio (peers.py)."""
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    cfg = config.compose(overrides if "tricks" in given else ["tricks=free-lunch", *overrides])
    peers.check(cfg)
    store, runner = open_runner(cfg.store, force=True)  # every repeat is a new measurement
    best = record.best_record(list(store.latest().values()), cfg.model.name, cfg.hardware.name)
    ours = peers.ours_config(cfg, best)
    hf = peers.hf_config(cfg, cfg.micro_batch if "micro_batch" in given else ours.micro_batch)
    sku = runner.gpu_sku(cfg)
    n = cfg.peers.repeats
    print(f"peers: {cfg.model.name} on {cfg.hardware.name}, {n} alternating run(s) per side, "
          f"{cfg.warmup_steps} warm-up + {cfg.steps} timed steps\n"
          f"  HF Trainer: {config.tricks_label(hf.tricks)} TrainingArguments, micro-batch {hf.micro_batch} × "
          f"accumulation {hf.grad_accum}\n  ours: " + (f"best in the store, {summary(best).splitlines()[0]}"
                                                      if best else "no valid record in the store: this cell"),
          flush=True)

    def report_run(side: str, i: int, r: dict) -> None:
        print(f"  run {i + 1}/{n} {peers.LABELS[side]}: {summary(r)}", flush=True)

    records = peers.measure_alternating(lambda c, kind: runner.measure(c, kind=kind), hf, ours, n, report_run)
    rows = {side: peers.side_row(side, records[side]) for side in peers.SIDES}
    text = peers.render(cfg.model.name, cfg.hardware.name, sku, rows, n, cfg.steps)
    path = store.root / f"peers-{cfg.model.name}-{cfg.hardware.name}.md"
    path.write_text(text)
    print(f"\n{text}\ntable: {path}")
    if peers.ratio(rows) is not None:
        return OK
    return exit_status([r for side in peers.SIDES for r in records[side]]) or CRASH
