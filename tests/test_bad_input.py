"""Bad input never crashes `pretrain-bench run` and never starts a worker: a property test over config overrides.

Hypothesis draws override lists from the real schema (every dataclass field, every group option) mixed with invalid
settings (unknown keys and groups, wrong types, non-positive sizes, non-dividing batches, impossible hardware,
strategy/trick conflicts, unknown choices) and junk. Either the config is accepted (a sentinel stands in for
`launch.run_cell`, so nothing runs), or `main` returns 2 with one paragraph on stderr naming a backticked key (and,
for an unknown choice, the allowed values). Never another exception, and never a worker for invalid input.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pretrain_bench import cli, config
from pretrain_bench.bench import launch
from pretrain_bench.spec import gpus, models

GROUPS = ("model", "hardware", "strategy", "tricks", "data")
# Real text takes minutes to tokenize, so the data group and data.source only ever get invalid values here.
NOT_PLAUSIBLE = ("store", "env", "data.source")


def schema_leaves(node: type = config.BenchConfig, prefix: str = "") -> dict[str, object]:
    """Every leaf key of the schema with its declared type, e.g. {"model.recipe.lr": float}."""
    hints = typing.get_type_hints(node)
    found: dict[str, object] = {}
    for f in dataclasses.fields(node):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            found.update(schema_leaves(kind, f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = kind
    return found


LEAVES = schema_leaves()
SCHEMA_PATHS = {".".join(k.split(".")[:i]) for k in LEAVES for i in range(1, k.count(".") + 2)}
NODE_FIELDS = {prefix: {k.split(".")[prefix.count(".")] for k in LEAVES if k.startswith(prefix)}
               for prefix in ("", *(p + "." for p in SCHEMA_PATHS if p not in LEAVES))}


def base_type(kind: object) -> type:
    """What a value must convert to: int for `int | None`, list for `list[str]`."""
    origin = typing.get_origin(kind)
    if origin in (list, dict):
        return origin
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def optional(kind: object) -> bool:
    return type(None) in typing.get_args(kind)


CHOICES = {"model.family": models.FAMILIES, "model.recipe.precision": config.RECIPE_PRECISIONS,
           "hardware.gpu": tuple(gpus.CATALOGUE), "strategy.backend": config.BACKENDS,
           "tricks.precision": config.TRICK_PRECISIONS, "tricks.attention": config.ATTENTIONS,
           "data.source": config.DATA_SOURCES, "timing": config.TIMINGS, "multinode": config.MULTINODE,
           "logger": config.LOGGERS, **{g: tuple(config.options(g)) for g in GROUPS}}
# Smallest valid value of every integer (1 unless listed). `seed` may be any integer; data.* sizes are checked by
# corpus.py when real text is prepared, which this test never does.
MINIMUM = {"steps": config.MIN_TIMED_STEPS, "warmup_steps": 0, "strategy.zero_stage": 0, "model.num_classes": 2}
SIZES = {k: MINIMUM.get(k, 1) for k, t in LEAVES.items()
         if base_type(t) is int and k != "seed" and not k.startswith("data.")}
# Out of range for the documented bounds.
BAD_FLOATS = {"model.rotary_pct": ("0", "-0.25", "1.5", "nan"), "model.recipe.lr": ("0", "-1e-3", "-inf", "nan", "inf"),
              "model.recipe.beta1": ("-0.1", "1", "7"), "model.recipe.eps": ("0", "nan"),
              "model.recipe.grad_clip": ("-1",),
              "model.recipe.warmup_ratio": ("-0.1", "1", "nan"), "model.recipe.min_lr_ratio": ("-0.1", "1.5", "nan"),
              "target.loss": ("0", "-1"), "model.mask_prob": ("0", "1", "-0.5", "nan")}
WRONG_TYPES = {int: ("abc", "1.5", "true", "[1]", "{a:1}"), float: ("abc", "[1.0]", "{a:1}"),
               bool: ("maybe", "[true]", "{a:1}"), str: ("[a]", "{a:1}"), list: ("abc", "{a:1}"), dict: ("5", "[a]")}
# A config group given a non-string value (Hydra raises a plain ValueError, which compose turns into a ConfigError).
GROUP_WRONG_TYPES = ("3", "1.5", "true", "null", "[nope]", "{a:1}")


@dataclass(frozen=True)
class Item:
    """Overrides that belong together, and whether they are invalid whatever else the list sets."""

    overrides: tuple[str, ...]
    must_fail: bool = False


def word(exclude=()) -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True).filter(lambda w: w not in exclude)


def setting(key: str, values: st.SearchStrategy[str], must_fail: bool) -> st.SearchStrategy[Item]:
    return values.map(lambda v: Item((f"{key}={v}",), must_fail))


def plausible_value(key: str) -> st.SearchStrategy[str]:
    """A value of the right type, mostly in range, so that a good share of lists composes."""
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    kind = base_type(LEAVES[key])
    if kind is bool:
        return st.sampled_from(["true", "false"])
    if kind is int:
        # Small, so that a good share of lists composes (divisibility is checked in O(√n), so size is no concern).
        return st.integers(1, 16).map(str)
    if kind is float:
        return st.sampled_from(["0.1", "0.5", "1.0"])
    return st.sampled_from(["x", "null"] if optional(LEAVES[key]) else ["x"])


PLAUSIBLE = st.one_of(
    st.sampled_from([k for k in LEAVES if k not in NOT_PLAUSIBLE and base_type(LEAVES[k]) in (int, float, bool, str)])
    .flatmap(lambda k: setting(k, plausible_value(k), must_fail=False)),
    st.sampled_from([g for g in GROUPS if g != "data"]).flatmap(lambda g: setting(g, st.sampled_from(CHOICES[g]),
                                                                                  must_fail=False)),
)

CONFLICTS = st.one_of(
    # micro_batch not dividing global_batch: world × micro_batch cannot divide it either
    st.tuples(st.integers(1, 64), st.integers(2, 16)).filter(lambda gm: gm[0] % gm[1])
    .map(lambda gm: (f"model.global_batch={gm[0]}", f"micro_batch={gm[1]}")),
    # impossible hardware: a world size with an odd factor never divides a power-of-two global batch
    st.tuples(st.sampled_from([3, 5, 6, 7]), st.integers(0, 10))
    .map(lambda wk: (f"hardware.gpus_per_node={wk[0]}", f"model.global_batch={2 ** wk[1]}")),
    st.tuples(st.sampled_from(["single", "ddp", "fsdp"]), st.integers(1, 3))
    .map(lambda bs: (f"strategy.backend={bs[0]}", f"strategy.zero_stage={bs[1]}")),
    st.sampled_from(["offload_optimizer", "offload_params"])
    .map(lambda f: ("strategy.backend=fsdp", f"strategy.{f}=true")),
    st.integers(1, 2).map(lambda s: ("strategy.backend=deepspeed", f"strategy.zero_stage={s}",
                                     "strategy.offload_params=true")),
    st.integers(2, 8).map(lambda n: ("strategy.backend=single", f"hardware.gpus_per_node={n}")),
    st.just(("hardware.gpu=cpu", "tricks.attention=flash_attention_2")),
    st.just(("hardware.gpu=v100", "tricks.precision=bf16")),
    st.just(("data.source=synthetic", "target.loss=3.0")),
    st.tuples(st.integers(1, 256), st.integers(2, 32)).filter(lambda hn: hn[0] % hn[1])
    .map(lambda hn: (f"model.hidden_size={hn[0]}", f"model.num_heads={hn[1]}")),
).map(lambda overrides: Item(overrides, must_fail=True))

INVALID = st.one_of(
    CONFLICTS,
    # unknown keys, also with `+` (the schema is closed: only env.* may be added)
    st.sampled_from(sorted(NODE_FIELDS)).flatmap(
        lambda node: word(exclude={*NODE_FIELDS[node], *GROUPS, "hydra", "sweep"})
        .flatmap(lambda name: st.sampled_from([Item((f"{node}{name}=1",), must_fail=True),
                                               Item((f"+{node}{name}=1",), must_fail=True)]))),
    st.sampled_from(GROUPS).flatmap(lambda g: setting(g, word(exclude=CHOICES[g]), must_fail=True)),
    st.sampled_from([k for k in CHOICES if k not in GROUPS])
    .flatmap(lambda k: setting(k, word(exclude=CHOICES[k]), must_fail=True)),
    st.sampled_from([k for k in LEAVES if k != "store"]).flatmap(lambda k: setting(
        k, st.sampled_from(WRONG_TYPES[base_type(LEAVES[k])] + (() if optional(LEAVES[k]) else ("null",))),
        must_fail=True)),
    st.sampled_from(GROUPS).flatmap(lambda g: setting(g, st.sampled_from(GROUP_WRONG_TYPES), must_fail=True)),
    st.sampled_from(sorted(SIZES)).flatmap(lambda k: setting(k, st.integers(-1000, SIZES[k] - 1).map(str), True)),
    st.sampled_from(sorted(BAD_FLOATS)).flatmap(lambda k: setting(k, st.sampled_from(BAD_FLOATS[k]), True)),
)

JUNK = st.one_of(
    st.text(alphabet="abmz019_.=+~[]{},:'\"$@/ ", max_size=12),
    st.sampled_from(sorted(LEAVES)).map(lambda k: "~" + k),
).filter(lambda text: not text.startswith("-")).map(lambda text: Item((text,)))  # `-x` is an argparse flag


@st.composite
def override_lists(draw) -> list[Item]:
    """Plausible settings, and in half the lists a few invalid ones and junk too, in any order."""
    items = draw(st.lists(PLAUSIBLE, max_size=4))
    if draw(st.booleans()):
        items += draw(st.lists(INVALID, min_size=1, max_size=2)) + draw(st.lists(JUNK, max_size=1))
    return draw(st.permutations(items))


def keys(item: Item) -> set[str]:
    return {o.lstrip("+~").split("=", 1)[0].split("@", 1)[0] for o in item.overrides}


def must_fail(items: list[Item]) -> bool:
    """Whether an invalid item stands: no later item overrides one of its keys (or a node above them)."""
    return any(item.must_fail and not any(k == later or k.startswith(later + ".") for k in keys(item)
                                          for after in items[i + 1:] for later in keys(after))
               for i, item in enumerate(items))


PARSER = OverridesParser.create()
GROUP_KEYS = {"", *GROUPS, "sweep", "hydra"}


class Launched(Exception):
    """Raised instead of starting workers: reaching it means the config was accepted."""


@pytest.fixture
def launches(monkeypatch) -> list:
    calls: list = []

    def run_cell(cfg, *args, **kwargs):
        calls.append(cfg)
        raise Launched

    monkeypatch.setattr(launch, "run_cell", run_cell)
    return calls


def last_value(overrides: list[str], key: str) -> str | None:
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key and "=" in o]
    return values[-1] if values else None


def check_message(err: str, overrides: list[str]) -> str:
    """One paragraph, no traceback, a backticked key; for an unknown choice, every allowed value. Returns the key."""
    text = err.strip()
    assert text and "\n\n" not in text and "Traceback" not in text, err
    named = re.search(r"`([^`]+)`", text)
    assert named, err
    key = named.group(1)
    assert key in SCHEMA_PATHS or key in GROUPS or key == "overrides" or any(key in o for o in overrides), err
    value = last_value(overrides, key)
    if key in CHOICES and value and re.fullmatch(r"[\w.-]+", value) and value not in (*CHOICES[key], "null"):
        assert all(allowed in text for allowed in CHOICES[key]), err
    return key


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # examples: conftest.py profiles
@given(items=override_lists())
def test_bad_input_is_one_paragraph_before_any_worker(items, launches, tmp_path, capsys):
    overrides = [o for item in items for o in item.overrides]
    launches.clear()
    capsys.readouterr()
    try:
        code = cli.main(["run", *overrides, f"store={tmp_path}"])
    except Launched:
        event("accepted (would run)")
        assert not must_fail(items), f"invalid overrides accepted: {overrides}"
        return
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert not launches and not (tmp_path / "runs").exists()
    key = check_message(err, overrides)
    event(f"rejected: `{key}`" if must_fail(items) else "rejected (not predicted by the generator)")
