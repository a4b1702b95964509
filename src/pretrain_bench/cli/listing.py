"""`list`: what can be named in a run (models, hardware layouts, strategies, trick sets, GPU types), and
`--print-config`: the config a command would run, resolved, without running it."""

from __future__ import annotations

from omegaconf import OmegaConf

from pretrain_bench import config
from pretrain_bench.config.cli_options import pop_option
from pretrain_bench.config.compose import config_file, options
from pretrain_bench.spec import gpus, models

WHAT = ("models", "hardware", "strategies", "tricks", "gpus")
_GROUPS = {"models": "model", "hardware": "hardware", "strategies": "strategy", "tricks": "tricks"}
# Options that ride along with the overrides of some commands (methods=[…], seeds=3, …): not config keys.
_RIDE_ALONG = ("methods", "strategies", "baseline", "seeds")


def cmd_list(what: str | None) -> int:
    for name in [what] if what else WHAT:
        print(f"{name}:")
        for line in _gpu_lines() if name == "gpus" else _group_lines(_GROUPS[name]):
            print(f"  {line}")
    return 0


def _group_lines(group: str) -> list[str]:
    names = options(group)
    width = max(map(len, names), default=0)
    return [f"{name:{width}s}  {_describe(group, name)}" for name in names]


def _describe(group: str, name: str) -> str:
    path = config_file(group, name)
    if group == "model":
        m = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config.ModelConfig), OmegaConf.load(path)))
        size = f"{_count(models.num_params(m))} parameters" if m.family in models.FAMILIES else "unknown family"
        shape = f"{m.image_size}² images" if m.is_vision else f"sequence {m.seq_len}"
        return f"{m.family}, {size}, {shape}, global batch {m.global_batch}"
    if group == "hardware":
        hw = OmegaConf.load(path)
        nodes = hw.get("nodes", 1)
        return f"{nodes * hw.get('gpus_per_node', 1)} × {hw.gpu}" + (f" on {nodes} nodes" if nodes > 1 else "")
    comment = []  # strategies and trick sets: the first sentence of the file's leading comment says what it is
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    return " ".join(comment).split(". ")[0].rstrip(".")


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _gpu_lines() -> list[str]:
    out = []
    for spec in gpus.CATALOGUE.values():
        dtype = next((d for d in ("bf16", "fp16", "fp32") if spec.peak(d)), None)
        peak = f", {spec.peak(dtype) / 1e12:,.0f} TFLOP/s dense {dtype}" if dtype else ""
        price = f", ${spec.price_per_hour:.2f}/GPU-h" if spec.price_per_hour else ""
        out.append(f"{spec.key:12s} {spec.name}, {spec.memory_gib:g} GiB{peak}{price}")
    return out


def print_config(overrides: list[str]) -> int:
    """The composed, validated config of a command's overrides as YAML, with the values derived from it."""
    for key in _RIDE_ALONG:
        overrides, _ = pop_option(overrides, key, None)
    cfg = config.compose(overrides)
    print(OmegaConf.to_yaml(OmegaConf.create(config.to_dict(cfg))), end="")
    print(f"# derived: world size {cfg.world_size}, gradient accumulation {cfg.grad_accum}, "
          f"precision {cfg.precision}")
    return 0
