"""Where the YAML configs and shipped data live: one directory for Hydra's groups and the catalogues read below
config (GPUs, efficiency parameters). `PRETRAIN_BENCH_CONFIGS` points elsewhere (a checkout's configs, a test's copy).
"""

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def shipped(packaged: str, checkout: str) -> Path:
    """Data that a wheel ships inside the package (`pretrain_bench/<packaged>`, copied there by setup.py's build) and
    that a checkout or an editable install reads where users look for it, at the top of the repository."""
    inside = _PACKAGE / packaged
    return inside if inside.is_dir() else _PACKAGE.parents[1] / checkout


CONFIG_DIR = Path(os.environ.get("PRETRAIN_BENCH_CONFIGS") or shipped("configs", "configs"))
