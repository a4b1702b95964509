"""`pretrain-bench` command line: run, search, validate, sweep, status, target, profile, peers, numerics, ….

Hydra overrides (`model=pythia-160m micro_batch=8 ...`) follow the sub-command. Config problems exit with status 2
and one paragraph naming the key, before any worker process starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import statistics
import sys
import threading
from pathlib import Path

from pretrain_bench import config, export, measure, numerics, peers, plot, record, report, reproduce, search, sweep
from pretrain_bench.runner import Runner
from pretrain_bench.store import Store


def summary(r: dict) -> str:
    c = r["cell"]
    head = (f"[{r['status']}] {c['model']} on {c['hardware']} · {c['strategy']} · {c['tricks']} · "
            f"micro-batch {c['micro_batch']} × accumulation {c['grad_accum']}")
    if r["status"] == "not_reached":
        t = r["target"]
        return f"{head}: validation loss {t['final_val_loss']:.4f} > target {t['loss']} after {t['max_steps']} steps"
    if r["status"] != "ok":
        return f"{head}: {r['error']}"
    stats, mfu = r["timing"]["stats"], r["flops"]["mfu"]
    mfu_text = "MFU n/a on CPU" if mfu is None else f"MFU {mfu:.1%}"
    text = (f"{head}: {report.rate(r['throughput'], unit=True)}, step {stats['median']:.3f} s "
            f"(IQR {stats['iqr']:.3f} s, n={stats['n']}), {mfu_text}, peak memory {r['memory']['peak_gib']:.2f} GiB")
    if r.get("target"):
        t = r["target"]
        text += f"; target {t['loss']} reached after {t['steps']} steps in {t['time_s']:.1f} s"
    return text if r["valid"] else f"{text}\n  INVALID: {r['invalid_reason']}"


def cmd_run(overrides: list[str], force: bool) -> int:
    cfg = config.compose(overrides)
    store = Store(cfg.store)
    store.check_writable()
    runner = Runner(store, force=force)
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
    return 0 if result["status"] == "ok" and result["valid"] else 1


def cmd_validate(overrides: list[str], force: bool, reference_steps: int) -> int:
    """Run the cell for `steps` real optimizer steps and compare the wall time with the extrapolation."""
    cfg = config.compose(overrides)
    store = Store(cfg.store)
    store.check_writable()
    runner = Runner(store, force=force)
    reference = runner.measure(dataclasses.replace(cfg, steps=reference_steps))
    print(f"reference ({reference_steps} timed steps): {summary(reference)}", flush=True)
    if reference["status"] != "ok":
        return 1
    long = runner.measure(cfg, kind="validate")
    if long["status"] != "ok":
        print(f"validation run: {summary(long)}")
        return 1
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


def cmd_target(overrides: list[str], force: bool) -> int:
    """Train each method until the validation loss reaches target.loss, `target.seeds` times, and compare."""
    overrides, methods = pop_option(overrides, "methods", None)
    base = config.compose(overrides)
    if base.target.loss is None:
        raise config.ConfigError("target.loss", "is required, e.g. target.loss=3.5")
    store = Store(base.store)
    store.check_writable()
    runner = Runner(store, force=force)
    rows = []
    for method in ([m.strip() for m in methods.strip("[]").split(",")] if methods else [None]):
        method_overrides = [] if method is None else method_to_overrides(method)
        records = []
        for i in range(base.target.seeds):
            cfg = config.compose([*overrides, *method_overrides, f"seed={base.seed + i}"])
            records.append(runner.measure(cfg, kind="target"))
            print(summary(records[-1]), flush=True)
        rows.append(target_row(method or config.tricks_label(base.tricks), records))
    print(report.target_table(rows), end="")
    out = store.root / f"target-{base.model.name}-{base.hardware.name}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"summary: {out}")
    return 0 if all(r["reached"] == r["runs"] for r in rows) else 1


def cmd_numerics(overrides: list[str], force: bool) -> int:
    """Loss curves of faster methods against the baseline's seed-to-seed spread, with a table and a plot."""
    overrides, methods = pop_option(overrides, "methods", None)
    overrides, baseline = pop_option(overrides, "baseline", None)
    overrides, seeds = pop_option(overrides, "seeds", "3")
    if not methods:
        raise config.ConfigError("methods", "name the methods to compare, e.g. methods=[free-lunch-flce,zero2:bf16]")
    if not seeds.isdigit() or int(seeds) < 2:
        raise config.ConfigError("seeds", f"the baseline's spread needs at least 2 seeds, got {seeds!r}")
    baseline_overrides = method_to_overrides(baseline) if baseline else []
    base = config.compose([*overrides, *baseline_overrides])
    store = Store(base.store)
    store.check_writable()
    runner = Runner(store, force=force)
    label = baseline or config.tricks_label(base.tricks)

    def measure(method_overrides: list[str], seed: int) -> dict:
        r = runner.measure(config.compose([*overrides, *method_overrides, f"seed={seed}"]))
        print(summary(r), flush=True)
        return r

    base_runs = [r for i in range(int(seeds)) if (r := measure(baseline_overrides, base.seed + i))["status"] == "ok"]
    if len(base_runs) < 2:
        print(f"the baseline {label} has {len(base_runs)} ok runs; its spread needs 2", file=sys.stderr)
        return 1
    curves = [r["losses"] for r in base_runs]
    window = min(numerics.WINDOW, len(curves[0]))
    verdicts, method_curves = [], {}
    speeds = {label: report.rate(base_runs[0]["throughput"], unit=True)}
    failed = 0
    for method in [m.strip() for m in methods.strip("[]").split(",")]:
        r = measure(method_to_overrides(method), base.seed)
        if r["status"] != "ok":
            failed += 1
            continue
        verdicts.append(numerics.judge(method, r["losses"], curves, window))
        speeds[method], method_curves[method] = report.rate(r["throughput"], unit=True), r["losses"]
    name = store.root / f"numerics-{base.model.name}-{base.hardware.name}"
    title = f"Loss curves: {base.model.name} on {base.hardware.name}, {len(curves[0])} steps"
    table = numerics.markdown(title, label, len(curves), window, verdicts, speeds)
    name.with_suffix(".md").write_text(table)
    figure = plot.loss_curves({label: curves}, method_curves, name.with_suffix(".png"), title)
    print(f"{table}written: {name.with_suffix('.md')}, {figure}")
    return 0 if not failed and all(v.within_spread for v in verdicts) else 1


def method_to_overrides(method: str) -> list[str]:
    """`free-lunch` or `zero2:free-lunch` (strategy:tricks) as config overrides."""
    *strategy, tricks = method.split(":")
    return [f"tricks={tricks}", *(f"strategy={s}" for s in strategy)]


def target_row(method: str, records: list[dict]) -> dict:
    """One method's repeats: time and steps to target over the runs that reached it, speed over all."""
    reached = [r for r in records if r["status"] == "ok"]
    speeds = [r["throughput"]["tokens_per_s"] for r in records if r.get("throughput")]
    return {"method": method, "runs": len(records), "reached": len(reached),
            "statuses": [r["status"] for r in records],
            "time_s": measure.repeat_stats([r["target"]["time_s"] for r in reached]) if reached else None,
            "steps": measure.repeat_stats([r["target"]["steps"] for r in reached]) if reached else None,
            "tokens_per_s": statistics.median(speeds) if speeds else None,
            "final_val_loss": measure.repeat_stats([r["target"]["final_val_loss"] for r in records
                                                    if r.get("target")]) if speeds else None,
            "keys": [r["key"] for r in records]}


def cmd_reproduce(store_dir: str, claims_path: str) -> int:
    """Published claims: the MFU they imply, a verdict, and our measured (or peak-scaled) figure beside them."""
    records = [r for r in Store(store_dir).latest().values()
               if r["kind"] == "throughput" and r["status"] == "ok" and r["valid"] and r["flops"]["mfu"] is not None]
    rows = []
    for claim in reproduce.load_claims(claims_path):
        ours = [r for r in records if r["cell"]["model"] == claim.model]
        ours.sort(key=lambda r: (r["env"]["gpu_sku"] == claim.gpu, r["throughput"]["tokens_per_s_per_device"]))
        comparison = None
        if ours:
            best = ours[-1]
            comparison = reproduce.compare(claim, best["throughput"]["tokens_per_s_per_device"], best["env"]["gpu_sku"])
        rows.append((reproduce.assess(claim), comparison))
    print(reproduce.render(rows), end="")
    print("\nStep time as measured (honest) and as the reference harness would read it (legacy), same steps:\n")
    print(report.timing_table(list(Store(store_dir).latest().values())), end="")
    return 0


def cmd_profile(overrides: list[str]) -> int:
    """Profile the cell's timed steps: trace files per rank and a breakdown of where the step time goes."""
    cfg = config.compose(overrides)
    store = Store(cfg.store)
    store.check_writable()
    result = Runner(store, force=True).measure(cfg, kind="profile")
    if result["status"] != "ok":
        print(summary(result))
        return 1
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


def best_record(records: list[dict], model: str | None, hardware_name: str | None) -> dict | None:
    """The fastest valid throughput record of a (model, hardware) pair: what a search recommends."""
    ranked = [r for r in records if r["kind"] == "throughput" and r["status"] == "ok" and r["valid"]
              and r["cell"]["model"] == model and r["cell"]["hardware"] == hardware_name]
    return max(ranked, key=lambda r: r["throughput"]["tokens_per_s"], default=None)


def cmd_peers(overrides: list[str]) -> int:
    """HF Trainer vs our best method on the same cell, alternating runs; a table with the ratio (peers.py)."""
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    cfg = config.compose(overrides if "tricks" in given else ["tricks=free-lunch", *overrides])
    peers.check(cfg)
    store = Store(cfg.store)
    store.check_writable()
    runner = Runner(store, force=True)  # every repeat is a new measurement
    best = best_record(list(store.latest().values()), cfg.model.name, cfg.hardware.name)
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
    return 0 if peers.ratio(rows) is not None else 1


def cmd_export(overrides: list[str], store_dir: str, to: str, out_dir: str) -> int:
    """Write the best measured method for a model and hardware as a ready-to-use training config."""
    names = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("model", "hardware"))
    if set(names) != {"model", "hardware"}:
        raise config.ConfigError("overrides", "export needs model=<name> hardware=<name>, e.g. model=pythia-1b "
                                              "hardware=1xh100")
    best = best_record(list(Store(store_dir).latest().values()), names["model"], names["hardware"])
    if best is None:
        print(f"no valid measurement of {names['model']} on {names['hardware']} in {store_dir}: run "
              f"`pretrain-bench search model={names['model']} hardware={names['hardware']}` first", file=sys.stderr)
        return 1
    try:
        path = export.write_export(best, to, out_dir)
    except ValueError as e:  # e.g. a DeepSpeed config for a method that is not DeepSpeed
        raise config.ConfigError("--to", str(e)) from None
    print(f"{summary(best)}\nwritten: {path}\nlaunch: {export.launch_command(best, to)}")
    return 0


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
    return 0 if written else 1


def pop_option(overrides: list[str], key: str, default: str | None) -> tuple[list[str], str | None]:
    """Take a search option (`methods=…`, `strategies=[a,b]`) out of the Hydra overrides."""
    rest = [o for o in overrides if not o.startswith(f"{key}=")]
    values = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    return rest, (values[-1] if values else default)


def cmd_search(overrides: list[str], force: bool) -> int:
    overrides, methods = pop_option(overrides, "methods", "free-lunch")
    overrides, strategies = pop_option(overrides, "strategies", None)
    base = search.base_config(overrides)
    store = Store(base.store)
    store.check_writable()
    runner = Runner(store, force=force)
    runner.gpu_sku(base)
    allowed = [s.strip() for s in strategies.strip("[]").split(",")] if strategies else None
    methods_to_try, pruned = search.candidates(base, methods, allowed)
    sizes = search.micro_batches(base)
    estimate = search.estimate_seconds(base, len(methods_to_try))
    print(f"search plan for {base.model.name} on {base.hardware.name}: {len(methods_to_try)} methods to try "
          f"({methods}), {len(pruned)} pruned before running; micro-batch candidates {sizes}; "
          f"estimated time {'unknown on CPU' if estimate is None else f'≤ {estimate / 60:.0f} min'} "
          "(methods pruned while running take none)")
    for m in methods_to_try:
        print(f"  try   {m.label}")
    for o in pruned:
        print(f"  prune {o.method.label}: {o.reason}")
    with progress_bar(len(methods_to_try) + len(pruned)) as advance:
        result = search.Search(runner, overrides, base, on_outcome=advance).run(methods_to_try, pruned)
    measured = [o.record for o in result.outcomes if o.status == "measured"]
    if measured:
        print(report.table(measured), end="")
    best = result.best
    summary_path = store.root / f"search-{base.model.name}-{base.hardware.name}.json"
    summary_path.write_text(json.dumps({
        "model": base.model.name, "hardware": base.hardware.name, "methods": methods,
        "elapsed_s": result.elapsed_s, "best_key": best.record["key"] if best else None,
        "outcomes": [{"method": o.method.label, "status": o.status, "micro_batch": o.micro_batch,
                      "probes": o.probes, "reason": o.reason, "key": (o.record or {}).get("key")}
                     for o in result.outcomes]}, indent=2))
    print(f"search took {result.elapsed_s / 60:.1f} min; summary: {summary_path}")
    if not best:
        print("no method fits and runs on this hardware", file=sys.stderr)
        return 1
    print(f"best: {best.method.label} at micro-batch {best.micro_batch}: {summary(best.record)}")
    return 0


@contextlib.contextmanager
def progress_bar(total: int):
    """A rich progress bar over methods; yields the callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns) as bar:
        task = bar.add_task("", total=total)

        def advance(outcome: search.Outcome) -> None:
            tail = f" at micro-batch {outcome.micro_batch}" if outcome.micro_batch else ""
            reason = outcome.reason.split(":")[0] if outcome.status == "pruned" else outcome.reason
            bar.console.print(f"  {outcome.status:8s} {outcome.method.label}{tail} {reason}")
            bar.update(task, advance=1, description=outcome.method.label)

        yield advance


def cmd_sweep(overrides: list[str], store_dir: str, dry_run: bool) -> int:
    """Validate the whole grid, launch only the cells that are not done, and show progress from status files."""
    cells, launcher = sweep.expand(overrides)
    store = Store(store_dir)
    store.check_writable()
    todo = sweep.missing(store, cells)
    print(f"sweep of {len(cells)} cells: {len(cells) - len(todo)} already done, {len(todo)} to launch with the "
          f"{sweep.launcher_name(launcher)} launcher; store {store.root}")
    for cell in todo:
        print(f"  {cell.id}  {cell.label}")
    if not todo or dry_run:
        return 0
    log_path = store.root / "sweeps" / "launcher.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop cleanly, as on Ctrl-C
    with open(log_path, "a") as log, sweep_progress(store, todo):
        sweep.launch(store, todo, launcher, log)
    return cmd_status(cells, store)


@contextlib.contextmanager
def sweep_progress(store: Store, cells: list):
    """A live view while the sweep runs: cells finished, running and failed, elapsed and estimated remaining time
    (from the cells' status files, so it works the same for local and SLURM launchers)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn(), TextColumn("{task.description}"))
    stop = threading.Event()
    with Progress(*columns) as bar:
        task = bar.add_task("", total=len(cells))

        def refresh() -> None:
            while not stop.wait(2.0):
                by_state = sweep.summary(store, cells)
                running = ", ".join(f"{s['cell']['model']} on {s['cell']['hardware']}" for s in by_state["running"])
                bar.update(task, completed=len(by_state["done"]) + len(by_state["failed"]),
                           description=f"{len(by_state['failed'])} failed · running: {running or '—'}")

        watcher = threading.Thread(target=refresh, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()


def cmd_status(cells: list, store: Store) -> int:
    """Done / running / failed / missing per cell, with the best method of the done ones."""
    by_state = sweep.summary(store, cells)
    counts = ", ".join(f"{len(v)} {k}" for k, v in by_state.items() if v)
    print(f"{len(cells)} cells: {counts}")
    for state, statuses in by_state.items():
        for st in statuses:
            cell = st["cell"]
            detail = st.get("best_method") or st.get("error") or ""
            elapsed = f" {st['elapsed_s'] / 60:.1f} min" if st.get("elapsed_s") else ""
            print(f"  {state:8s} {cell['model']} on {cell['hardware']} ({cell['methods']}){elapsed} {detail}")
    return 0 if len(by_state["done"]) == len(cells) else 1


def cmd_table(store: str, fmt: str) -> int:
    records = list(Store(store).latest().values())
    if not records:
        print(f"no records in {store}", file=sys.stderr)
        return 1
    print(report.table(records, fmt), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    """Sub-commands; each sets `handler`, a function of the parsed arguments."""
    p = argparse.ArgumentParser(prog="pretrain-bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, overrides: str | None, force: bool, handler) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        if overrides:
            cmd.add_argument("overrides", nargs="*", help=overrides)
        if force:
            cmd.add_argument("--force", action="store_true", help="measure again what the store already has")
        cmd.set_defaults(handler=handler)
        return cmd

    command("run", "benchmark one cell: model × hardware × strategy × tricks × micro-batch",
            "Hydra overrides, e.g. model=pythia-160m strategy=fsdp", True, lambda a: cmd_run(a.overrides, a.force))
    command("search", "fastest method that fits for one model and hardware",
            "model=… hardware=… methods=naive|free-lunch|all [strategies=[ddp,zero2]] and overrides", True,
            lambda a: cmd_search(a.overrides, a.force))
    command("target", "train until a validation loss is reached; compare methods at equal quality",
            "model=… data=stdlib target.loss=… target.eval_every=… [target.seeds=N] "
            "[methods=[free-lunch,naive,zero2:free-lunch]]", True, lambda a: cmd_target(a.overrides, a.force))
    val = command("validate", "run a cell for `steps` real steps and check the extrapolation",
                  "the cell's overrides, with steps=N (e.g. steps=50)", True,
                  lambda a: cmd_validate(a.overrides, a.force, a.reference_steps))
    val.add_argument("--reference-steps", type=int, default=10, help="timed steps of the short reference run")
    swp = command("sweep", "a grid of model × hardware searches, resumable, local or on SLURM",
                  "model=a,b hardware=x,y methods=… [sweep=paper] [hydra/launcher=slurm hydra.launcher.partition=…]",
                  False, lambda a: cmd_sweep(a.overrides, a.store, a.dry_run))
    swp.add_argument("--dry-run", action="store_true", help="show the cells that would be launched, launch none")
    sts = command("status", "done / running / failed / missing cells of a sweep",
                  "the sweep's overrides (as given to `sweep`)", False,
                  lambda a: cmd_status(sweep.expand(a.overrides)[0], Store(a.store)))
    command("profile", "profiler trace and time breakdown of one cell's timed steps",
            "the cell's overrides, as for `run`", False, lambda a: cmd_profile(a.overrides))
    command("numerics", "loss curves of faster methods against the baseline's seed-to-seed spread (table + PNG)",
            "model=… hardware=… steps=200 methods=[free-lunch-flce,free-lunch-fp8] [baseline=bf16] [seeds=3] "
            "and overrides", True, lambda a: cmd_numerics(a.overrides, a.force))
    command("peers", "HF Trainer (free-lunch TrainingArguments) vs our best method, alternating runs, with the ratio",
            "model=… hardware=… [micro_batch=…] [peers.repeats=2] [tricks=…] and overrides", False,
            lambda a: cmd_peers(a.overrides))
    rep = command("reproduce", "published training-time claims vs the hardware's peak and our records", None, False,
                  lambda a: cmd_reproduce(a.store, a.claims))
    rep.add_argument("--claims", default=str(config.CONFIG_DIR.parent / "results" / "reference" / "claims.csv"))
    tab = command("table", "comparison table of the records in a store", None, False,
                  lambda a: cmd_table(a.store, a.format))
    tab.add_argument("--format", choices=report.FORMATS, default="md")
    exp = command("export", "the best measured method as a Hugging Face, DeepSpeed or accelerate config",
                  "model=<name> hardware=<name>", False, lambda a: cmd_export(a.overrides, a.store, a.to, a.out))
    exp.add_argument("--to", choices=export.TARGETS, default="hf")
    exp.add_argument("--out", default="exports", help="directory to write into")
    plt = command("plot", "PNG plots of the records in a store", None, False, lambda a: cmd_plot(a.store, a.out))
    plt.add_argument("--out", default="plots", help="directory to write into")
    for cmd in (swp, sts, rep, tab, exp, plt):
        cmd.add_argument("--store", default="bench-results")
    from pretrain_bench import cli_predict  # predict, plan, calibrate, predict-check

    cli_predict.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (config.ConfigError, PermissionError) as e:
        print(f"pretrain-bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
