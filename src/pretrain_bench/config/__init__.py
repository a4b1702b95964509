"""Configuration: the typed schema of every group, Hydra composition, validation and canonical labels.

Callers use this package's names (`config.compose`, `config.BenchConfig`, `config.ConfigError`, …); the modules
behind them each do one job. Nothing here imports torch.
"""

from pretrain_bench.config.compose import add_config_dir, compose, config_dirs, config_file, options
from pretrain_bench.config.labels import FREE_LUNCH, NAIVE, strategy_label, tricks_label
from pretrain_bench.config.schema import (
    ATTENTION_BACKENDS,
    ATTENTIONS,
    BACKENDS,
    COMPILE_MODES,
    CUDA_GRAPH_COMPILE_MODES,
    DATA_SOURCES,
    LOGGERS,
    MIN_TIMED_STEPS,
    MULTINODE,
    RECIPE_PRECISIONS,
    TIMINGS,
    TRICK_PRECISIONS,
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
    from_dict,
    to_dict,
)
from pretrain_bench.config.validate import divisors, validate
from pretrain_bench.spec.paths import CONFIG_DIR, shipped

__all__ = [
    "ATTENTIONS", "ATTENTION_BACKENDS", "BACKENDS", "COMPILE_MODES", "CONFIG_DIR", "CUDA_GRAPH_COMPILE_MODES",
    "DATA_SOURCES", "FREE_LUNCH", "LOGGERS", "MIN_TIMED_STEPS", "MULTINODE", "NAIVE", "RECIPE_PRECISIONS", "TIMINGS",
    "TRICK_PRECISIONS", "BenchConfig", "ConfigError", "DataConfig", "HardwareConfig", "ModelConfig", "PeersConfig",
    "RecipeConfig", "StrategyConfig", "TargetConfig", "TricksConfig", "add_config_dir", "compose", "config_dirs",
    "config_file", "divisors", "from_dict", "options", "shipped", "strategy_label", "to_dict", "tricks_label",
    "validate",
]
