"""The corpus cache: where it lives, what names an entry, and building an entry once even when several processes
prepare the same corpus at the same time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pretrain_bench.config import DataConfig


def cache_root(data: DataConfig) -> Path:
    return Path(data.cache_dir).expanduser()


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def build_once(target: Path, build: Callable[[Path], None]) -> None:
    """Build `target` unless it exists: under a file lock, into a temporary path renamed into place, so concurrent
    preparers wait for one another and reuse the result, and a crash never leaves a half-written cache behind."""
    from filelock import FileLock

    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if target.exists():
            return
        tmp = target.with_name(f".{target.name}.tmp")
        if tmp.is_dir():  # left behind by a preparer that crashed
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
        build(tmp)
        os.replace(tmp, target)
