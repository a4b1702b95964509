"""Hydra composition: `configs/bench.yaml` plus overrides into a validated `BenchConfig`, with Hydra's errors
rewritten into one `ConfigError` that names the key and lists what is allowed."""

from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import fields
from pathlib import Path

from pretrain_bench.config.schema import (
    BenchConfig,
    ConfigError,
    DataConfig,
    HardwareConfig,
    ModelConfig,
    PeersConfig,
    RecipeConfig,
    StrategyConfig,
    TargetConfig,
    TricksConfig,
)
from pretrain_bench.config.validate import validate
from pretrain_bench.spec.paths import CONFIG_DIR

USER_DIRS_ENV = "PRETRAIN_BENCH_CONFIG_DIRS"  # the user's own config directories (`--config-dir`), os.pathsep-separated


def add_config_dir(path: str | Path) -> Path:
    """Add a user's config directory (same layout: `model/`, `hardware/`, …) to every later composition, in this
    process and in the processes it starts (sweep jobs inherit the environment)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError("--config-dir", f"{path} is not a directory; give a directory laid out as configs/ "
                                          f"(model/, hardware/, strategy/, tricks/, …)")
    dirs = [str(d) for d in user_config_dirs()]
    if str(path) not in dirs:
        os.environ[USER_DIRS_ENV] = os.pathsep.join([*dirs, str(path)])
    return path


def user_config_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(USER_DIRS_ENV, "").split(os.pathsep) if d]


def config_dirs() -> list[Path]:
    """Where config files are looked up, in Hydra's order: the package's configs win over a user's on equal names."""
    return [CONFIG_DIR, *user_config_dirs()]


def config_file(group: str, name: str) -> Path:
    """The YAML file of a config `name` in `group` (e.g. strategy/zero2), wherever it lives."""
    for d in config_dirs():
        if (path := d / group / f"{name}.yaml").is_file():
            return path
    raise ConfigError(group, f"no config {name!r}; allowed: {', '.join(options(group))}")


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="bench_schema", node=BenchConfig)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> BenchConfig:
    """Compose `configs/bench.yaml` with Hydra overrides into a validated BenchConfig (no output folders).

    Hydra takes ~0.1 s per composition, and a search or plan composes the same cells many times: Hydra's results
    are cached per (overrides, config directories) and handed out as copies, so a caller may change its own; the
    validation, which also asks the environment (installed packages), runs every time."""
    cfg = copy.deepcopy(_hydra_compose(tuple(overrides), tuple(map(str, user_config_dirs()))))
    validate(cfg)
    return cfg


@functools.lru_cache(maxsize=4096)
def _hydra_compose(overrides: tuple[str, ...], user_dirs: tuple[str, ...]) -> BenchConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_schema()
    if user_dirs:  # appended to Hydra's search path after the package's configs
        overrides = (*overrides, "hydra.searchpath=[" + ",".join(f"'file://{d}'" for d in user_dirs) + "]")
    for o in overrides:
        if o.startswith("+") and not o.lstrip("+").startswith("env."):
            key = o.lstrip("+").split("=", 1)[0] or "overrides"
            raise ConfigError(key, f"'+' adds a key, and the schema is closed: only worker environment variables "
                                   f"can be added (+env.NAME=value). Allowed keys: {', '.join(_schema_keys(''))}")
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a sweep job) on the same config dir
            node = hydra_compose(config_name="bench", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                node = hydra_compose(config_name="bench", overrides=list(overrides))
        cfg = OmegaConf.to_object(node)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_key_of(e), _hydra_message(e)) from None
    except ValueError as e:  # Hydra's own ValueErrors, e.g. a group given a number instead of a config name
        raise ConfigError("overrides", f"{e}; a config group takes a config name, e.g. model=pythia-160m") from None
    return cfg


def _key_of(e: Exception) -> str:
    text = str(e)
    for pattern in (r"Could not find '([\w-]+)/", r"override '([\w.]+)'", r"override ([\w.]+)=", r"Key '(\w+)'"):
        if found := re.search(pattern, text):
            return found.group(1)
    return str(getattr(e, "full_key", "") or "overrides")


def _hydra_message(e: Exception) -> str:
    """Hydra's own words (which already list a group's options), without search paths and object dumps."""
    parts = [str(e)] + ([str(e.__cause__)] if e.__cause__ else [])
    text = " ".join(p.split("Config search path")[0].split("full_key:")[0] for p in parts)
    message = re.sub(r"To append to your config use \S+ ", "", " ".join(text.split()))
    if found := re.search(r"override '([\w.]+)'", message):
        parent = found.group(1).rsplit(".", 1)[0] if "." in found.group(1) else ""
        message += f" Allowed keys{' under ' + parent if parent else ''}: {', '.join(_schema_keys(parent))}."
    return message


def _schema_keys(path: str) -> list[str]:
    nodes = {"": BenchConfig, "model": ModelConfig, "model.recipe": RecipeConfig, "hardware": HardwareConfig,
             "strategy": StrategyConfig, "tricks": TricksConfig, "data": DataConfig,
             "target": TargetConfig, "peers": PeersConfig}
    return [f.name for f in fields(nodes[path])] if path in nodes else []


def options(group: str) -> list[str]:
    """The config names available in a group (e.g. every model), from the YAML files of every config directory."""
    return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})
