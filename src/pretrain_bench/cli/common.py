"""What every command shares: one line per record, and the store and runner a measuring command opens."""

from __future__ import annotations

from pretrain_bench.analysis import report
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store


def open_runner(store_dir: str, force: bool) -> tuple[Store, Runner]:
    """The store (checked writable before any measurement) and a runner that reuses its final records."""
    store = Store(store_dir)
    store.check_writable()
    return store, Runner(store, force=force)


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
