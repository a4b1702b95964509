"""The result record: plain JSON with a schema version, built from a config and a worker's measurement.

Everything downstream (store, tables, estimates, exports) reads these records, never live objects. On disk a record
is a JSON object; in memory it is a `Record`, the same dict with accessors for what every reader asks (is it
rankable, its rate, its MFU), so that no reader re-derives them. No torch here.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import platform
from importlib import metadata
from typing import Any

from pretrain_bench.analysis.perf import records as perf_records
from pretrain_bench.config import BenchConfig, strategy_label, to_dict, tricks_label
from pretrain_bench.spec import gpus, models
from pretrain_bench.spec import stats as step_stats

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "timeout", "diverged", "not_reached")


class Kind(str, enum.Enum):
    """What a record measured. `peer` is another framework's training of the same cell (`pretrain-bench peers`; the
    record's `peer` says which): never ranked among our methods (tables, search and export rank `throughput` only)."""

    THROUGHPUT = "throughput"  # a `run`: timed steps of our loop
    PROBE = "probe"  # a micro-batch fit test of the search, never ranked
    VALIDATE = "validate"  # a long run that checks the extrapolation
    TARGET = "target"  # trained until a validation loss (`not_reached` when the step budget ran out first)
    PROFILE = "profile"  # profiler trace and breakdown, never ranked (profiler overhead)
    PEER = "peer"

    @property
    def worker_mode(self) -> str:
        """What the worker runs for this kind: our loop's throughput mode unless the kind needs another."""
        return {Kind.TARGET: "target", Kind.PROFILE: "profile", Kind.PEER: "hf-trainer"}.get(self, "throughput")


KINDS = tuple(k.value for k in Kind)


class Record(dict):
    """A result record: the plain JSON object (what the store writes), with accessors."""

    @property
    def ok(self) -> bool:
        return self["status"] == "ok"

    @property
    def rankable(self) -> bool:
        """A valid, ok measurement of our loop's throughput: what tables star, searches rank and exports write."""
        return self["kind"] == Kind.THROUGHPUT and self.ok and self["valid"]

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens per second over all devices (images for vision models), None without a timing."""
        return (self.get("throughput") or {}).get("tokens_per_s")

    @property
    def mfu(self) -> float | None:
        return (self.get("flops") or {}).get("mfu")


LIBRARIES = ("torch", "transformers", "deepspeed", "accelerate", "torchao")
# Config keys that do not change what is measured, so they stay out of a cell's identity.
# `env` enters the key as the workers' effective environment (bench.runner.key_env), inherited variables included.
_NOT_IN_KEY = ("store", "timeout_s", "steps", "warmup_steps", "collective_timeout_s", "multinode", "env",
               "logger", "peers", "search_repeats")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return versions


def cell(cfg: BenchConfig) -> dict[str, Any]:
    """The human-readable identity of a measurement: what a table row shows."""
    hw = cfg.hardware
    return {"model": cfg.model.name, "hardware": hw.name, "gpu": hw.gpu, "nodes": hw.nodes,
            "gpus_per_node": hw.gpus_per_node, "world_size": cfg.world_size,
            "strategy": strategy_label(cfg.strategy), "tricks": tricks_label(cfg.tricks), "precision": cfg.precision,
            "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum, "global_batch": cfg.model.global_batch,
            "seq_len": cfg.model.seq_len, **({"memory_gib": hw.memory_gib} if hw.memory_gib is not None else {})}


def cell_key(cfg: BenchConfig, versions: dict[str, str], gpu_sku: str, env: dict[str, str] | None = None) -> str:
    """Hash of everything that determines a measurement: config, library versions, the GPU actually used and the
    workers' speed-relevant environment variables."""
    config = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_IN_KEY}
    if cfg.hardware.memory_gib is None:  # no budget: the key a store had before budgets existed, so it is reused
        del config["hardware"]["memory_gib"]
    blob = json.dumps({"config": config, "versions": versions, "gpu": gpu_sku, "env": env or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_record(cfg: BenchConfig, key: str, status: str, error: str | None,
                measurement: dict[str, Any] | None, env: dict[str, Any], kind: str = "throughput",
                failed_step: int | None = None) -> Record:
    """`kind`: throughput (a `run`), probe (a micro-batch fit test, never ranked), validate (a long run) or target
    (trained until a validation loss; `not_reached` when the step budget ran out first)."""
    record = Record({
        "schema_version": SCHEMA_VERSION, "kind": Kind(kind).value, "key": key,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "status": status, "error": error, "failed_step": failed_step, "valid": status == "ok",
        "invalid_reason": None,
        "cell": cell(cfg), "config": to_dict(cfg), "env": env,
        "numerics": {"precision": cfg.precision, "recipe_precision": cfg.model.recipe.precision,
                     # FP8 Linear layers compute below the recipe's precision whatever the autocast dtype
                     "fp8_linear": cfg.tricks.fp8,
                     "matches_recipe": cfg.precision == cfg.model.recipe.precision and not cfg.tricks.fp8},
        "timing": None, "throughput": None, "flops": None, "memory": None,
        "losses": [], "grad_norms": [], "skipped_steps": None,
    })
    if measurement:
        record.update(_measured_fields(cfg, measurement, env))
        # accumulation and reduction dtypes and when gradients are reduced, read from the backend's live objects
        record["numerics"]["grad_reduction"] = measurement.get("grad_reduction")
        record["compile"] = measurement.get("compile")  # dynamo's graphs, graph breaks, recompiles (compiled runs)
        if kind == "profile":
            record["profile"] = measurement["profile"]
            record["valid"] = False  # profiler overhead: never ranked as a throughput
            record["invalid_reason"] = "profiled run (profiler overhead): for the breakdown, never ranked"
        if kind == "peer":
            record["peer"] = measurement["peer"]
            if record["timing"]:
                record["timing"]["method"] = measurement["peer"]["timing_method"]
        if kind == "target":
            record["target"] = measurement["target"]
            if status == "ok" and not measurement["target"]["reached"]:
                record["status"] = status = "not_reached"
                record["valid"] = False
        if kind == Kind.THROUGHPUT:  # the performance model's step beside the measured one (None if not modelled)
            record["prediction"] = perf_records.beside(record, cfg.store)
        mfu = (record["flops"] or {}).get("mfu")
        if status == "ok" and mfu is not None and mfu > 1.0:
            record["valid"] = False
            record["invalid_reason"] = (f"MFU {mfu:.1%} exceeds the {record['flops']['peak_dtype']} peak: "
                                        "the timing or the FLOP count is wrong")
        elif status == "ok" and cfg.timing == "legacy":
            record["valid"] = False
            record["invalid_reason"] = "legacy timing (the reference harness's method): for comparison, never ranked"
    return record


def _measured_fields(cfg: BenchConfig, m: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"losses": m["losses"], "grad_norms": m["grad_norms"], "skipped_steps": m["skipped_steps"],
                           "memory": {"peak_gib": m["peak_mem_bytes"] / 2**30, "kind": m["mem_kind"]}}
    for key, name in (("peak_reserved_bytes", "reserved_gib"), ("setup_peak_mem_bytes", "setup_peak_gib"),
                      ("rss_growth_bytes", "rss_growth_gib")):
        # CUDA only: the allocator's reserved peak; set-up's own peak, kept out of peak_gib. A CPU with a budget
        # (hardware.memory_gib): the peak RSS's growth since the model build, what the budget caps
        if m.get(key) is not None:
            out["memory"][name] = m[key] / 2**30
    if m.get("num_alloc_retries") is not None:  # CUDA only: cudaMalloc retries after freeing the allocator's cache
        out["memory"]["num_alloc_retries"] = m["num_alloc_retries"]
    if not m["step_s"]:
        return out
    honest = step_stats.step_time_stats(m["step_s"])
    # A peer framework's steps have no legacy (reference-harness) reading: its loop is not ours to instrument.
    legacy = step_stats.step_time_stats(m["legacy_step_s"]) if m.get("legacy_step_s") else None
    stats = legacy if cfg.timing == "legacy" else honest
    tokens_per_step = cfg.model.global_batch * cfg.model.tokens_per_sample  # images for vision models
    tokens_per_s = tokens_per_step / stats["median"]
    spec = gpus.gpu(env.get("gpu_sku") or cfg.hardware.gpu)
    dtype = gpus.peak_dtype(cfg.precision, cfg.tricks.tf32)
    peak = cfg.hardware.peak_tflops * 1e12 if cfg.hardware.peak_tflops else spec.peak(dtype)
    per_token, causal = models.flops_per_token(cfg.model), models.causal_flops_per_token(cfg.model)
    legacy_method = "host clock, no device sync, first micro-batch × accumulation + optimizer call"
    out["timing"] = {
        "method": (f"LEGACY: {legacy_method}" if cfg.timing == "legacy"
                   else "whole optimizer step, device-synchronized wall clock, warm-up excluded"),
        "warmup_steps": cfg.warmup_steps, "timed_steps": len(m["step_s"]), "step_s": m["step_s"],
        "stats": stats, "timed_wall_s": m["timed_wall_s"], "setup_s": m["setup_s"], "first_step_s": m["first_step_s"],
        "compile_s": max(0.0, m["first_step_s"] - honest["median"]) if cfg.tricks.compile else None,
        "honest_stats": honest,
        "legacy": legacy and {"method": legacy_method, "step_s": m["legacy_step_s"], "stats": legacy,
                              "ratio_to_honest": legacy["median"] / honest["median"]},
    }
    # `tokens_per_s` is the rate of the model's unit: tokens, or images for vision models (`unit` says which).
    out["throughput"] = {"tokens_per_s": tokens_per_s, "tokens_per_s_per_device": tokens_per_s / cfg.world_size,
                         "sequences_per_s": cfg.model.global_batch / stats["median"], "unit": cfg.model.unit}
    out["flops"] = {"per_token": per_token, "formula": f"models.flops_per_token ({cfg.model.family}), per "
                                                      f"{cfg.model.unit}",
                    "peak_dtype": dtype, "peak_per_device": peak,
                    "mfu": step_stats.mfu(per_token, tokens_per_s, peak, cfg.world_size),
                    # Megatron-LM's convention (causal attention counted as half the scores), for its published MFUs
                    "per_token_causal": causal,
                    "mfu_causal": step_stats.mfu(causal, tokens_per_s, peak, cfg.world_size)}
    return out


REQUIRED = {"schema_version": int, "kind": str, "key": str, "created": str, "status": str, "valid": bool,
            "cell": dict, "config": dict, "env": dict, "numerics": dict, "losses": list, "grad_norms": list}
OK_REQUIRED = ("timing", "throughput", "flops", "memory")


def problems(record: Any) -> list[str]:
    """What is wrong with a record (empty if it is a well-formed record of the current schema)."""
    if not isinstance(record, dict):
        return [f"not a JSON object: {type(record).__name__}"]
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        return [f"schema_version {version!r} is not {SCHEMA_VERSION} (the version this pretrain-bench reads)"]
    found = [f"`{k}` missing or not {t.__name__}" for k, t in REQUIRED.items() if not isinstance(record.get(k), t)]
    if record.get("kind") not in KINDS:
        found.append(f"kind {record.get('kind')!r} not one of {', '.join(KINDS)}")
    if record.get("status") not in STATUSES:
        found.append(f"status {record.get('status')!r} not one of {', '.join(STATUSES)}")
    if record.get("status") == "ok":
        found += [f"`{k}` missing in an ok record" for k in OK_REQUIRED if not isinstance(record.get(k), dict)]
        if record.get("kind") == "peer" and not isinstance(record.get("peer"), dict):
            found.append("`peer` (which framework trained) missing in an ok peer record")
    return found


def best_record(records: list[Record], model: str | None, hardware_name: str | None) -> Record | None:
    """The fastest rankable record of a (model, hardware) pair: what a search recommends."""
    ranked = [r for r in records
              if r.rankable and r["cell"]["model"] == model and r["cell"]["hardware"] == hardware_name]
    return max(ranked, key=lambda r: r.tokens_per_s, default=None)
