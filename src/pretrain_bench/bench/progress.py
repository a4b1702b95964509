"""Live progress of a running cell: a thread follows the cell's log as the ranks write it and hands each line to a
watcher; the commands decide how to show it (cli/progress.py). Nothing here changes what is measured or recorded."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from pretrain_bench.spec.progress import parse_step


class Watcher:
    """What a command hears about the cells it runs. The base class ignores everything (sweeps, tests)."""

    def started(self, label: str, log_path: Path, total_steps: int) -> None:
        """A cell's workers are starting; their output goes to `log_path`."""

    def step(self, fields: dict) -> None:
        """Rank 0 finished an optimizer step (spec.progress.parse_step's fields)."""

    def line(self, text: str) -> None:
        """Any other line of the log (torchrun's, a warning, an evaluation)."""

    def finished(self, record: dict, log_path: Path) -> None:
        """The cell's record is written."""

    def corpus(self, stage: str, done: int, total: int) -> None:
        """Preparing real text: `done` of `total` documents of a stage (training the tokenizer, tokenising)."""


@contextlib.contextmanager
def following(log_path: Path, watcher: Watcher, interval_s: float = 0.25):
    """While the body runs, read `log_path` as it grows and pass each complete line to the watcher; the rest is read
    when the body ends, so no line is lost."""
    stop = threading.Event()

    def follow() -> None:
        while not log_path.exists() and not stop.wait(interval_s):
            pass
        if not log_path.exists():
            return
        with open(log_path, errors="replace") as log:
            pending = ""
            while True:
                chunk = log.read()
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for text in lines:
                        _dispatch(watcher, text)
                elif stop.is_set():
                    break
                else:
                    time.sleep(interval_s)
            if pending:
                _dispatch(watcher, pending)

    thread = threading.Thread(target=follow, daemon=True, name="log-follower")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _dispatch(watcher: Watcher, text: str) -> None:
    fields = parse_step(text)
    if fields is not None:
        watcher.step(fields)
    elif text.strip():
        watcher.line(text)
