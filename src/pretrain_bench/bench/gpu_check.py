"""The first check on a new GPU (`scripts/gpu_check.sh`): every CUDA path once at tiny scale, then the core records
and one peers comparison, in at most 10 minutes on one GPU of any type in the catalogue.

Each step is a `pretrain-bench` command run as its own process with a generous time-out; a step that fails is
recorded (exit status, time, the output's tail) and the check goes on. Steps that would start after the budget are
skipped, not squeezed. Expected times come from a small model of this check's own steps: process start-up, compile,
and the steps' FLOPs at a modest MFU on the GPU's catalogue peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from pretrain_bench import config
from pretrain_bench.bench import probe
from pretrain_bench.spec import gpus, models

BUDGET_S = 600
STARTUP_S = 20.0  # torchrun, imports (torch, transformers), CUDA context, building and wrapping a small model
COMPILE_S = {"tiny": 25.0, "pythia-160m": 50.0, "pythia-1b": 70.0}  # per-block torch.compile, first cell of a shape
ASSUMED_MFU = 0.3  # for expectations only: a low guess, so that the plan errs towards fitting
TINY = ["model=tiny", "model.seq_len=128", "model.global_batch=16", "micro_batch=8", "steps=5", "warmup_steps=1"]


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # the path it exercises or the record it makes
    args: tuple[str, ...]  # pretrain-bench arguments
    expected_s: float

    @property
    def timeout_s(self) -> int:
        return _timeout(self.expected_s)


def _timeout(expected_s: float) -> int:
    return int(max(90.0, 3 * expected_s))


def _step(name: str, what: str, args: list[str], expected_s: float) -> Step:
    """A step whose cell time-out (timeout_s, recorded as `timeout`) comes before the step's own kill."""
    return Step(name, what, (*args, f"timeout_s={_timeout(expected_s) - 15}"), expected_s)


def _seconds(model: str, sku: str, global_batch: int, steps: int, compiled: bool, runs: int = 1) -> float:
    """Start-up, compile, and the steps' model FLOPs at ASSUMED_MFU of the GPU's bf16 (else fp16/fp32) peak."""
    m = config.compose([f"model={model}"]).model
    spec = gpus.gpu(sku)
    peak = spec.peak("bf16") or spec.peak("fp16") or spec.peak("fp32")
    compute = models.flops_per_token(m) * m.seq_len * global_batch * steps / (peak * ASSUMED_MFU)
    return runs * (STARTUP_S + (COMPILE_S.get(model, 60.0) if compiled else 0.0) + compute)


def plan(sku: str, hardware: str, store: str) -> list[Step]:
    """The check's steps for one GPU of type `sku` (a catalogue key) named `hardware` in the configs."""
    spec = gpus.gpu(sku)
    common = [f"hardware={hardware}", "strategy=single", f"store={store}"]
    half = [] if spec.supports_bf16 else ["tricks.precision=fp16"]  # V100: the recipe's bf16 does not exist there

    def tiny(name: str, what: str, *overrides: str, command: str = "run", compiled: bool = False) -> Step:
        return _step(name, what, [command, *TINY, *common, *half, *overrides], _seconds("tiny", sku, 16, 6, compiled))

    steps = [
        tiny("free-lunch", "compile, TF32, SDPA (auto), fused AdamW, bf16", "tricks=free-lunch", compiled=True),
        *(tiny(f"sdpa-{b}", f"the {b} SDPA kernel alone", "tricks=bf16", "tricks.attention=sdpa",
               f"tricks.attention_backend={b}") for b in config.schema.GPU_ATTENTION_BACKENDS),
        tiny("fused-ce", "fused linear + cross-entropy head", "tricks=bf16", "tricks.fused_linear_ce=true"),
        tiny("checkpointing", "activation checkpointing", "tricks=bf16", "tricks.activation_checkpointing=true"),
        tiny("fsdp", "FSDP2 at world size 1 (meta-device build)", "tricks=bf16", "strategy=fsdp"),
        tiny("zero3", "DeepSpeed ZeRO-3 at world size 1 (zero.Init build)", "tricks=bf16", "strategy=zero3"),
        tiny("profile", "profiler trace and breakdown", "tricks=bf16", command="profile"),
    ]
    if "fp8" in spec.peak_flops:
        steps.insert(1, tiny("fp8", "torchao float8 Linear layers (needs torchao)", "tricks=free-lunch-fp8",
                             compiled=True))
    for model, micro_batch in (("pythia-160m", 16), ("pythia-1b", 8 if spec.memory_gib >= 70 else 2)):
        gb = 2 * micro_batch  # accumulation 2: a reduced global batch, the recipe's step anatomy
        steps.append(_step(f"core-{model}", f"{model} free-lunch record with MFU (global batch {gb})",
                           ["run", f"model={model}", f"micro_batch={micro_batch}", f"model.global_batch={gb}",
                            "tricks=free-lunch", "steps=5", "warmup_steps=2", *common, *half],
                           _seconds(model, sku, gb, 7, compiled=True)))
    steps.append(_step("peers-pythia-160m", "HF Trainer vs ours on pythia-160m, one run each",
                       ["peers", "model=pythia-160m", "micro_batch=16", "model.global_batch=32", "peers.repeats=1",
                        "steps=5", "warmup_steps=2", *common, *half],
                       _seconds("pythia-160m", sku, 32, 7, compiled=True, runs=2)))
    return steps


def hardware_for(sku: str, out: Path, write: bool) -> tuple[str, list[str]]:
    """A one-GPU hardware layout for `sku`: one of the configs if they have it, else `1x<sku>` written under `out`
    (when `write`) and passed with --config-dir, as a user's own layout would be."""
    for name in config.options("hardware"):
        hw = OmegaConf.load(config.config_file("hardware", name))
        if hw.gpu == sku and hw.get("gpus_per_node", 1) == 1 and hw.get("nodes", 1) == 1:
            return name, []
    name, own = f"1x{sku}", out / "configs"
    if write:
        (own / "hardware").mkdir(parents=True, exist_ok=True)
        (own / "hardware" / f"{name}.yaml").write_text(f"# written by the GPU check\nname: {name}\ngpu: {sku}\n"
                                                       "gpus_per_node: 1\nnodes: 1\n")
    return name, ["--config-dir", str(own)]


def checkable() -> list[str]:
    """The GPU types the check can plan for: the catalogue's, less the CPU and the placeholder for unknown GPUs (no
    peak to estimate a step's time from)."""
    return [k for k in gpus.CATALOGUE if k not in ("cpu", "unknown")]


def detect() -> str:
    """The catalogue key of this machine's first GPU: nvidia-smi's name, else torch's."""
    driver = probe.ask_driver()
    names = (driver or {}).get("names") or [probe.ask_torch()["name"]]
    sku = gpus.identify(names[0]) if names[0] else None
    if sku is None:
        raise config.ConfigError("--gpu", f"no GPU of the catalogue found (nvidia-smi / torch say {names[0]!r}); "
                                          f"allowed: {', '.join(checkable())}")
    return sku


def run_step(step: Step, extra: list[str], logs: Path) -> dict:
    started = time.monotonic()
    command = [sys.executable, "-m", "pretrain_bench.cli", *extra, *step.args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=step.timeout_s)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, output = 124, f"{e.stdout or ''}{e.stderr or ''}\nkilled after {step.timeout_s} s"
    (logs / f"{step.name}.txt").write_text(f"$ {' '.join(command)}\n{output}")
    outcome = {0: "ok", 1: "crash", 2: "refused (bad input)", 3: "finding", 124: "killed (time-out)"}
    return {"step": step.name, "status": outcome.get(code, f"exit {code}"), "exit": code,
            "seconds": round(time.monotonic() - started, 1), "expected_s": round(step.expected_s),
            "tail": "\n".join(output.strip().splitlines()[-4:])}


def summary(sku: str, results: list[dict], out: Path, budget_s: int) -> str:
    total = sum(r["seconds"] for r in results)
    lines = [f"# GPU check: {gpus.gpu(sku).name} ({sku})", "",
             f"{sum(r['status'] == 'ok' for r in results)} of {len(results)} steps ok, {total / 60:.1f} min of a "
             f"{budget_s / 60:.0f}-minute budget; records in `{out}/records.jsonl`, each step's output in "
             f"`{out}/gpu_check_logs/`.", "", "| step | status | s | expected s |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} | {r['expected_s']} |" for r in results]
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        lines += ["", "## Not ok", ""]
        lines += [f"- **{r['step']}** ({r['status']}): {r['tail'] or 'no output'}" for r in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="list the steps and their expected time; run nothing")
    p.add_argument("--gpu", help="catalogue key of the GPU (default: detected with nvidia-smi or torch)")
    p.add_argument("--out", help="output directory (default: $OUT/results/<gpu> if $OUT is set, else results/<gpu>)")
    p.add_argument("--budget-s", type=int, default=BUDGET_S, help="steps that would start later are skipped")
    args = p.parse_args(argv)
    try:
        sku = args.gpu or detect()
        if sku not in checkable():
            raise config.ConfigError("--gpu", f"{sku!r} is not a GPU type the check can plan for; allowed: "
                                              f"{', '.join(checkable())}")
    except config.ConfigError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(os.environ.get("OUT") or ".") / "results" / sku).resolve()
    hardware, extra = hardware_for(sku, out, write=not args.dry_run)
    steps = plan(sku, hardware, str(out))
    expected = sum(s.expected_s for s in steps)
    print(f"GPU check for {gpus.gpu(sku).name} ({sku}) as hardware={hardware}: {len(steps)} steps, expected "
          f"{expected / 60:.1f} min (budget {args.budget_s / 60:.0f} min); output: {out}")
    for s in steps:
        print(f"  {s.expected_s:5.0f} s  (time-out {s.timeout_s:3d} s)  {s.name:18s} {s.what}\n"
              f"           pretrain-bench {' '.join([*extra, *s.args])}")
    if args.dry_run:
        return 0
    logs = out / "gpu_check_logs"
    logs.mkdir(parents=True, exist_ok=True)
    deadline, results = time.monotonic() + args.budget_s, []
    for s in steps:
        if time.monotonic() + min(s.expected_s, s.timeout_s) > deadline:
            results.append({"step": s.name, "status": "skipped (budget spent)", "exit": None, "seconds": 0.0,
                            "expected_s": round(s.expected_s), "tail": ""})
        else:
            results.append(run_step(s, extra, logs))
        print(f"  {results[-1]['status']:22s} {results[-1]['seconds']:6.1f} s  {s.name}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps({"gpu": sku, "hardware": hardware, "results": results,
                                                    "plan": [asdict(s) for s in steps]}, indent=2))
    text = summary(sku, results, out, args.budget_s)
    (out / "gpu_check.md").write_text(text)
    print(f"\n{text}\nsummary: {out / 'gpu_check.md'}")
    return 0 if all(r["status"] == "ok" for r in results) else 3


if __name__ == "__main__":
    sys.exit(main())
