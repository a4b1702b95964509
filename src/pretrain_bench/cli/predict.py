"""`pretrain-bench predict · plan · calibrate · predict-check`: the performance model on the command line.

No training worker starts and no GPU is needed: everything here reads configs, the GPU catalogue, the fitted
constants (configs/perf/) and, for calibration, the store's records (a CPU is first measured by its micro-benchmarks,
in 2 processes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrain_bench import config
from pretrain_bench.analysis.perf import memcheck, plan, records, reference
from pretrain_bench.analysis.perf.workload import from_config
from pretrain_bench.config import ConfigError
from pretrain_bench.spec import gpus

GIB = 2**30


def _pop(overrides: list[str], key: str, default: str | None = None) -> tuple[list[str], str | None]:
    values = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    return [o for o in overrides if not o.startswith(f"{key}=")], (values[-1] if values else default)


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.0f}"


def _capacity(cap: float) -> str:
    return "unknown size" if cap == float("inf") else f"{cap / GIB:.0f} GiB"


def describe(a: plan.Answer) -> list[str]:
    w, s = a.workload, a.step
    low, high = s.interval_s
    d_low, d_high = a.days_interval
    mfu = "n/a" if s.mfu is None else f"{s.mfu:.1%}"
    unit = w.model.unit
    return [
        f"method {a.method}, micro-batch {w.micro_batch} × accumulation {w.grad_accum} on {w.world} × {w.gpu.name}",
        f"step {s.step_s:.3f} s (interval {low:.3f}–{high:.3f} s): compute {w.grad_accum * s.compute.total_s:.3f} s "
        f"(matmul {s.compute.matmul_s:.3f}, attention {s.compute.attention_s:.3f}, memory-bound "
        f"{s.compute.memory_s:.3f}, recompute {s.compute.recompute_s:.3f} per micro-batch), exposed communication "
        f"{s.comm_exposed_s:.3f} s, optimizer {s.optimizer_s:.3f} s",
        f"{s.units_per_s:,.0f} {unit}s/s ({s.units_per_s_per_gpu:,.0f} per GPU), MFU {mfu}",
        f"peak memory {a.peak_bytes / GIB:.1f} GiB of {_capacity(a.capacity_bytes)}: "
        f"{'fits' if a.fits else 'does NOT fit'}",
        f"recipe ({a.recipe_steps:,} steps): {a.days:,.2f} days ({d_low:,.2f}–{d_high:,.2f}), "
        f"{a.gpu_days:,.1f} GPU-days, cloud {_money(a.cost_cloud_usd)}, 5-yr purchase {_money(a.cost_purchase_usd)}"]


def cmd_predict(overrides: list[str]) -> int:
    overrides, methods = _pop(overrides, "methods")
    # ranking methods needs only the model and hardware: a strategy valid on any layout, as `search` composes it
    cfg = config.compose(overrides if methods is None else [*overrides, "strategy=zero2-offload", "micro_batch=1"])
    w = from_config(cfg)
    if methods is None:
        a = plan.answer(w, records.efficiency.for_gpu(w.gpu, cfg.store), cfg.model.recipe.steps)
        print(f"prediction for {cfg.model.name} on {cfg.hardware.name}:")
        print("\n".join("  " + line for line in describe(a)))
        return 0
    sets = {"all": ("free-lunch", "naive"), "free-lunch": ("free-lunch",), "naive": ("naive",)}
    if methods not in sets:
        raise ConfigError("methods", f"{methods!r} is not allowed; allowed values: {', '.join(sets)}")
    ranked = plan.ranked(w, cfg.model.recipe.precision, cfg.model.recipe.steps, cfg.store, sets[methods])
    print(f"methods for {cfg.model.name} on {cfg.hardware.name}, fastest predicted first, each at its largest "
          f"predicted micro-batch:")
    print("| rank | method | mb×acc | step s | tokens/s | peak GiB | fits | days |")
    print("|---|---|---|---|---|---|---|---|")
    for i, a in enumerate(ranked, 1):
        print(f"| {i} | {a.method} | {a.workload.micro_batch}×{a.workload.grad_accum} | {a.step.step_s:.3f} | "
              f"{a.step.units_per_s:,.0f} | {a.peak_bytes / GIB:.1f} | {'yes' if a.fits else 'no'} | {a.days:,.2f} |")
    return 0


def cmd_plan(overrides: list[str], out: str) -> int:
    overrides, wanted = _pop(overrides, "gpus")
    cfg = config.compose([*overrides, "hardware=1xh100", "strategy=single"])
    keys = [g.strip() for g in wanted.strip("[]").split(",")] if wanted else None
    for key in keys or ():
        if key not in gpus.CATALOGUE:
            raise ConfigError("gpus", f"unknown GPU {key!r}; allowed: {', '.join(sorted(gpus.CATALOGUE))}")
    rows = plan.plan(from_config(cfg), cfg.model.recipe.precision, cfg.model.recipe.steps, keys, cfg.store)
    print(f"plan for {cfg.model.name} ({cfg.model.recipe.steps:,} steps × {cfg.model.global_batch} sequences), "
          f"best predicted method per layout:")
    print("| GPU | GPUs | best method | mb×acc | days | GPU-days | cloud $ | purchase $ | fits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, per_node, nodes, a in rows:
        layout = f"{per_node}" if nodes == 1 else f"{nodes}×{per_node}"
        if a is None:
            print(f"| {key} | {layout} | (global batch not divisible) | | | | | | no |")
            continue
        print(f"| {key} | {layout} | {a.method} | {a.workload.micro_batch}×{a.workload.grad_accum} | {a.days:,.1f} "
              f"| {a.gpu_days:,.0f} | {_money(a.cost_cloud_usd)} | {_money(a.cost_purchase_usd)} | "
              f"{'yes' if a.fits else 'no'} |")
    path = plan_figure(cfg.model.name, [r for r in rows if r[3] is not None and r[3].fits], Path(out))
    print(f"figure: {path}")
    return 0


def plan_figure(model: str, rows: list, out: Path) -> Path:
    """Days against cloud cost, one series per GPU type, points labelled by GPU count (log-log)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6))
    ax = fig.add_subplot()
    for key in dict.fromkeys(r[0] for r in rows):
        mine = [(r[1] * r[2], r[3]) for r in rows if r[0] == key and r[3].cost_cloud_usd]
        if not mine:
            continue
        ax.plot([a.cost_cloud_usd for _, a in mine], [a.days for _, a in mine], "o-", label=key, markersize=4)
        for n, a in mine:
            ax.annotate(str(n), (a.cost_cloud_usd, a.days), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="cloud cost (USD)", ylabel="days",
           title=f"{model}: predicted days against cost (labels: GPU count)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"plan-{model}.png"
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def cmd_calibrate(store_dir: str, gpu_key: str) -> int:
    from pretrain_bench.bench import cpu_description
    from pretrain_bench.bench.store import Store

    if gpu_key not in gpus.CATALOGUE:
        raise ConfigError("--gpu", f"unknown GPU {gpu_key!r}; allowed: {', '.join(sorted(gpus.CATALOGUE))}")
    measured = cpu_description.describe_cpu() if gpus.gpu(gpu_key).arch == "cpu" else None
    if measured:
        print(f"cpu micro-benchmarks: {measured['peak_flops'] / 1e9:.1f} GFLOP/s fp32 matmul, "
              f"{measured['memory_bandwidth'] / 1e9:.1f} GB/s memory-bound kernels, gloo between 2 processes "
              f"{measured['allreduce_bandwidth'] / 1e9:.2f} GB/s all-reduce, "
              f"{measured['gather_bandwidth'] / 1e9:.2f} GB/s all-gather / reduce-scatter (bus)")
    eff, before, after, n = records.calibrate(list(Store(store_dir).latest().values()), gpu_key, store_dir, measured)
    print(f"calibrated {gpu_key} on {n} records: mean |log error| {before:.3f} -> {after:.3f}; interval "
          f"{eff.error_low:.2f}–{eff.error_high:.2f} × prediction")
    print(f"written to {records.efficiency.calibration_path(store_dir, gpu_key)}; predictions with "
          f"store={store_dir} use it from now on")
    return 0


def cmd_predict_check(reference_csv: str | None, memory_csv: str | None) -> int:
    if not reference_csv and not memory_csv:
        raise ConfigError("predict-check", "give --reference FILE.csv and/or --memory FILE.csv")
    if reference_csv:
        checked, skipped = reference.check(reference.read_rows(reference_csv))
        print("\n".join(reference.report(checked, skipped)))
    if memory_csv:
        print("\n".join(memcheck.report(memory_csv)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the four commands to `pretrain-bench`'s sub-parsers."""
    reference_dir = config.shipped("reference", "results/reference")
    p = sub.add_parser("predict", help="predicted step time, memory, days and cost of a cell (no GPU needed)")
    p.add_argument("overrides", nargs="*", help="the same overrides as `run`; methods=all ranks every method")
    p.set_defaults(handler=lambda a: cmd_predict(a.overrides))
    p = sub.add_parser("plan", help="best predicted method, days and cost for a model on every GPU type × count")
    p.add_argument("overrides", nargs="*", help="model=… [gpus=[h100,a100-80gb]] and model overrides")
    p.add_argument("--out", default="plots", help="directory of the days-against-cost PNG")
    p.set_defaults(handler=lambda a: cmd_plan(a.overrides, a.out))
    p = sub.add_parser("calibrate", help="fit the performance model's constants to your GPU's measured records")
    p.add_argument("--store", default="bench-results")
    p.add_argument("--gpu", default="cpu", help="catalogue key of the GPU whose records to fit")
    p.set_defaults(handler=lambda a: cmd_calibrate(a.store, a.gpu))
    p = sub.add_parser("predict-check", help="predictions against published throughput and memory measurements")
    p.add_argument("--reference", default=None, const=str(reference_dir / "published_throughput.csv"), nargs="?")
    p.add_argument("--memory", default=None, const=str(reference_dir / "languini_batch_sweep.csv"), nargs="?")
    p.set_defaults(handler=lambda a: cmd_predict_check(a.reference, a.memory))


