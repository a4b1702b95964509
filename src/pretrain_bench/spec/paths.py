"""Where the YAML configs live: one directory for Hydra's groups and the catalogues read below config (GPUs).

`PRETRAIN_BENCH_CONFIGS` points elsewhere (a checkout's configs, a test's copy).
"""

import os
from pathlib import Path

CONFIG_DIR = Path(os.environ.get("PRETRAIN_BENCH_CONFIGS", Path(__file__).resolve().parents[3] / "configs"))
