"""What every command shares: one line per record, and the store and runner a measuring command opens."""

from __future__ import annotations

from pretrain_bench.analysis import report
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store

# Exit statuses of every command (README, `pretrain-bench --help`).
OK = 0
CRASH = 1  # a cell crashed (error, timeout) or the command itself failed
BAD_INPUT = 2  # a config or command-line problem, found before any worker started
FINDING = 3  # it ran to the end, and the answer is no: a cell out of memory or diverged, an invalid measurement,
# a target not reached, a method out of the baseline's spread, no method that fits, a sweep with cells not done
CRASHES = ("error", "timeout")
EPILOG = ("exit status: 0 success; 1 a crash (a cell's error or time-out, or the command failed); 2 bad input "
          "(config or arguments, before any worker starts); 3 a finding that is not a crash (out of memory, diverged, "
          "invalid measurement, target not reached, numerics out of spread, no method fits, sweep not finished)")


def exit_status(records: list[dict]) -> int:
    """CRASH if any record crashed, else FINDING if any is not a valid ok, else OK."""
    if any(r["status"] in CRASHES for r in records):
        return CRASH
    return OK if all(r["status"] == "ok" and r["valid"] for r in records) else FINDING


def open_runner(store_dir: str, force: bool, live: bool = True) -> tuple[Store, Runner]:
    """The store (checked writable before any measurement) and a runner that reuses its final records and, if `live`,
    shows each cell's progress as it runs (a command with its own live display says False)."""
    from pretrain_bench.cli.progress import LiveWatcher

    store = Store(store_dir)
    store.check_writable()
    return store, Runner(store, force=force, **({"watcher": LiveWatcher()} if live else {}))


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
