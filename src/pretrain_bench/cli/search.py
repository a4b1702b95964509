"""`search`: the fastest method that fits for one model and hardware, with a live progress bar."""

from __future__ import annotations

import contextlib
import json
import sys

from pretrain_bench.analysis import report
from pretrain_bench.bench import search
from pretrain_bench.cli.common import FINDING, open_runner, summary
from pretrain_bench.config import cli_options as options


def cmd_search(overrides: list[str], force: bool) -> int:
    overrides, methods = options.pop_option(overrides, "methods", "free-lunch")
    overrides, strategies = options.pop_option(overrides, "strategies", None)
    overrides, prune = options.pop_option(overrides, "search.prune", "predicted")
    base = search.base_config(overrides)
    store, runner = open_runner(base.store, force=force, live=False)  # its own progress bar over methods
    runner.gpu_sku(base)
    allowed = [s.strip() for s in strategies.strip("[]").split(",")] if strategies else None
    methods_to_try, pruned = search.candidates(base, methods, allowed)
    searcher = search.Search(runner, overrides, base, prune=prune)
    methods_to_try, screened = searcher.screen(methods_to_try)
    pruned += screened
    sizes = search.micro_batches(base)
    estimate = search.estimate_seconds(base, len(methods_to_try))
    print(f"search plan for {base.model.name} on {base.hardware.name}: {len(methods_to_try)} methods to try "
          f"({methods}), {len(pruned)} pruned before running; micro-batch candidates {sizes}; "
          f"estimated time {'unknown on CPU' if estimate is None else f'≤ {estimate / 60:.0f} min'} "
          "(methods pruned while running take none)")
    for m in methods_to_try:
        g = searcher.guesses.get(m)
        step = f"{g.step_s:.3g} s" if g and g.step_s is not None else "unknown (no calibration)"
        told = f" (predicted: micro-batch {g.micro_batch}, step {step})" if g else ""
        print(f"  try   {m.label}{told}")
    for o in pruned:
        print(f"  prune {o.method.label}: {o.reason}")
    with progress_bar(len(methods_to_try) + len(pruned)) as advance:
        searcher.on_outcome = advance
        result = searcher.run(methods_to_try, pruned)
    measured = [o.record for o in result.outcomes if o.status == "measured"]
    if measured:
        print(report.table(measured), end="")
    best = result.best
    summary_path = store.root / f"search-{base.model.name}-{base.hardware.name}.json"
    summary_path.write_text(json.dumps({
        "model": base.model.name, "hardware": base.hardware.name, "methods": methods,
        "elapsed_s": result.elapsed_s, "best_key": best.record["key"] if best else None,
        "confirmation": result.confirmation.summary() if result.confirmation else None,
        "outcomes": [{"method": o.method.label, "status": o.status, "micro_batch": o.micro_batch,
                      "predicted_micro_batch": g.micro_batch if (g := searcher.guesses.get(o.method)) else None,
                      "probes": o.probes, "reason": o.reason, "key": (o.record or {}).get("key")}
                     for o in result.outcomes]}, indent=2))
    print(f"search took {result.elapsed_s / 60:.1f} min; summary: {summary_path}")
    if not best:
        print("no method fits and runs on this hardware", file=sys.stderr)
        return FINDING
    print(f"best: {best.method.label} at micro-batch {best.micro_batch}: {summary(best.record)}")
    if (c := result.confirmation) and c.winner:
        low, high = c.winner.spread
        print(f"ranked on the median of {len(c.winner.runs)} alternated runs: {c.winner.median:,.0f} tokens/s "
              f"(runs {low:,.0f}–{high:,.0f})")
        if c.within_noise:
            print(f"within noise: the runner-up, {c.ranked[1].label}, reached {c.ranked[1].spread[1]:,.0f} tokens/s "
                  f"in its best run, above the winner's worst; either is a sound choice")
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
