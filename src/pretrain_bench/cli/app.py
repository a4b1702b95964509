"""`pretrain-bench` command line: run, search, validate, sweep, status, target, profile, peers, numerics, ….

Hydra overrides (`model=pythia-160m micro_batch=8 ...`) follow the sub-command. Config problems exit with status 2
and one paragraph naming the key, before any worker process starts; `common` lists every exit status. Each command
lives in the module of its family; this one only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import sys

import pretrain_bench
from pretrain_bench import config
from pretrain_bench.analysis import export, report
from pretrain_bench.cli import compare, listing, measure, predict, results
from pretrain_bench.cli import search as search_cmd
from pretrain_bench.cli import sweep as sweep_cmd
from pretrain_bench.cli.common import BAD_INPUT, EPILOG


def parser() -> argparse.ArgumentParser:
    """Sub-commands; each sets `handler`, a function of the parsed arguments."""
    p = argparse.ArgumentParser(prog="pretrain-bench", description=__doc__.splitlines()[0], epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    p.add_argument("--config-dir", action="append", default=[], help=CONFIG_DIR_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, overrides: str | None, force: bool, handler) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, epilog=EPILOG)
        if name not in STORELESS:
            cmd.add_argument("overrides", nargs="*", help=overrides or "store=DIR (the same as --store DIR)")
            cmd.add_argument("--store", help=f"results directory, the same as store=DIR (default {DEFAULT_STORE})")
        # SUPPRESS: a sub-command's default must not erase a --config-dir given before the sub-command
        cmd.add_argument("--config-dir", action="append", default=argparse.SUPPRESS, help=CONFIG_DIR_HELP)
        if overrides and name not in ONE_CONFIG_EXCEPT:
            cmd.add_argument("--print-config", action="store_true",
                             help="print the resolved config (YAML) and exit without running anything")
        if force:
            cmd.add_argument("--force", action="store_true", help="measure again what the store already has")
        cmd.set_defaults(handler=handler)
        return cmd

    _measuring_commands(command)
    _sweep_commands(command)
    _store_commands(command)
    predict.register(sub)  # predict, plan, calibrate, predict-check
    return p


def _measuring_commands(command) -> None:
    """Commands that compose one cell's config and measure it."""
    command("run", "benchmark one cell: model × hardware × strategy × tricks × micro-batch",
            "Hydra overrides, e.g. model=pythia-160m strategy=fsdp", True,
            lambda a: measure.cmd_run(a.overrides, a.force))
    command("search", "fastest method that fits for one model and hardware",
            "model=… hardware=… methods=naive|free-lunch|all [strategies=[ddp,zero2]] and overrides", True,
            lambda a: search_cmd.cmd_search(a.overrides, a.force))
    command("target", "train until a validation loss is reached; compare methods at equal quality",
            "model=… data=stdlib target.loss=… target.eval_every=… [target.seeds=N] "
            "[methods=[free-lunch,naive,zero2:free-lunch]]", True, lambda a: measure.cmd_target(a.overrides, a.force))
    val = command("validate", "run a cell for `steps` real steps and check the extrapolation",
                  "the cell's overrides, with steps=N (e.g. steps=50)", True,
                  lambda a: measure.cmd_validate(a.overrides, a.force, a.reference_steps))
    val.add_argument("--reference-steps", type=int, default=10, help="timed steps of the short reference run")
    command("profile", "profiler trace and time breakdown of one cell's timed steps",
            "the cell's overrides, as for `run`", False, lambda a: measure.cmd_profile(a.overrides))
    command("numerics", "loss curves of faster methods against the baseline's seed-to-seed spread (table + PNG)",
            "model=… hardware=… steps=200 methods=[free-lunch-flce,free-lunch-fp8] [baseline=bf16] [seeds=3] "
            "and overrides", True, lambda a: compare.cmd_numerics(a.overrides, a.force))
    command("peers", "HF Trainer (free-lunch TrainingArguments) vs our best method, alternating runs, with the ratio",
            "model=… hardware=… [micro_batch=…] [peers.repeats=2] [tricks=…] and overrides", False,
            lambda a: compare.cmd_peers(a.overrides))


def _sweep_commands(command) -> None:
    """Grids of searches, local or on SLURM."""
    swp = command("sweep", "a grid of model × hardware searches, resumable, local or on SLURM",
                  "model=a,b hardware=x,y methods=… [sweep=paper] [hydra/launcher=slurm hydra.launcher.partition=…]",
                  False, lambda a: sweep_cmd.cmd_sweep(a.overrides, a.store, a.dry_run, a.detach))
    swp.add_argument("--dry-run", action="store_true", help="show the cells that would be launched, launch none")
    swp.add_argument("--detach", action="store_true", help="SLURM: submit the jobs and return at once")
    sts = command("status", "done / running / failed / missing cells of a sweep, with their SLURM jobs' states",
                  "the sweep's overrides (as given to `sweep`)", False,
                  lambda a: sweep_cmd.cmd_status_of(a.overrides, a.store, a.watch))
    sts.add_argument("--watch", action="store_true", help="follow until no job of the sweep is queued or running")
    command("cancel", "cancel the queued and running SLURM jobs of a sweep", "the sweep's overrides", False,
            lambda a: sweep_cmd.cmd_cancel(a.overrides, a.store))


def _store_commands(command) -> None:
    """Commands that read a store (or the catalogue)."""
    rep = command("reproduce", "published training-time claims vs the hardware's peak and our records", None, False,
                  lambda a: results.cmd_reproduce(a.store, a.claims))
    rep.add_argument("--claims", default=str(config.shipped("reference", "results/reference") / "claims.csv"))
    tab = command("table", "comparison table of the records in a store", None, False,
                  lambda a: results.cmd_table(a.store, a.format, {k: getattr(a, k) for k in report.FILTERS}))
    tab.add_argument("--format", choices=report.FORMATS, default="md")
    for key in report.FILTERS:
        tab.add_argument(f"--{key}", help=f"only records of this {key} (its name as in the table)")
    exp = command("export", "a measured method as a Hugging Face, DeepSpeed or accelerate config",
                  "model=<name> hardware=<name> [strategy=…] [tricks=…] (the fastest such record), or key=<record>",
                  False,
                  lambda a: results.cmd_export(a.overrides, a.store, a.to, a.out))
    exp.add_argument("--to", choices=export.TARGETS, default="hf")
    exp.add_argument("--out", default="exports", help="directory to write into")
    plt = command("plot", "PNG plots of the records in a store", None, False,
                  lambda a: results.cmd_plot(a.store, a.out))
    plt.add_argument("--out", default="plots", help="directory to write into")
    lst = command("list", "the models, hardware layouts, strategies, trick sets and GPU types that can be named",
                  None, False, lambda a: listing.cmd_list(a.what))
    lst.add_argument("what", nargs="?", choices=listing.WHAT, help="one kind only (default: all)")


ONE_CONFIG_EXCEPT = ("sweep", "status", "cancel", "export")  # a grid of configs, or record selectors: nothing to print
DEFAULT_STORE = "bench-results"
STORELESS = ("list",)  # reads the configs only: no overrides, no store
# Commands that compose a BenchConfig, whose `store` they use.
COMPOSING = ("run", "search", "target", "validate", "profile", "numerics", "peers")
CONFIG_DIR_HELP = ("a directory of your own configs laid out as configs/ (model/, hardware/, …), searched after the "
                   "package's: a new model or hardware layout is one YAML file there (repeatable)")


def version() -> str:
    """The installed distribution's version, or the source tree's (PYTHONPATH runs have no metadata)."""
    from importlib import metadata

    try:
        return metadata.version("pretrain-bench")
    except metadata.PackageNotFoundError:
        return pretrain_bench.__version__


def one_store(args: argparse.Namespace) -> None:
    """`store=DIR` and `--store DIR` mean the same for every command. Commands that compose a config read it from
    the overrides (cfg.store); the others from args.store, and the override is not passed on (it is no cell key)."""
    if not hasattr(args, "overrides") or not hasattr(args, "store"):  # `list`, and the prediction commands' own options
        return
    mine = [o for o in args.overrides if o.lstrip("+~").split("=", 1)[0] == "store"]
    given = {o.split("=", 1)[1] for o in mine} | ({args.store} - {None})
    if len(given) > 1:
        raise config.ConfigError("store", f"given twice with different values ({', '.join(sorted(given))}); "
                                          "store=DIR and --store DIR are the same option")
    if args.command in COMPOSING:
        args.overrides += [f"store={args.store}"] if args.store and not mine else []
        return
    args.store = given.pop() if given else DEFAULT_STORE
    args.overrides = [o for o in args.overrides if o not in mine]
    if args.command in ("table", "plot", "reproduce") and args.overrides:
        raise config.ConfigError("overrides", f"`{args.command}` takes no overrides but store=DIR; got "
                                              f"{' '.join(args.overrides)}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        one_store(args)
        for path in args.config_dir:
            config.add_config_dir(path)
        if getattr(args, "print_config", False):
            return listing.print_config(args.overrides)
        return args.handler(args)
    except (config.ConfigError, PermissionError) as e:
        print(f"pretrain-bench: {e}", file=sys.stderr)
        return BAD_INPUT
