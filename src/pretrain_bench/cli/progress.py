"""Live progress of the cell that is running: its log's path first, then rank 0's steps (step i/n, step time, loss,
throughput, memory) as a rich progress bar on a terminal, or as a line every few seconds when the output is a file
or a pipe (a batch job's log); the log's path again when the cell fails. Real text shows its tokenising progress."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from pretrain_bench.bench.progress import Watcher

PLAIN_EVERY_S = 10.0  # without a terminal: at most one step line per this many seconds (and the first and last)
_SHOWN_LINES = ("eval after step",)  # other log lines worth showing as they come (the rest stay in the log)


def describe(f: dict) -> str:
    rate = f["rate"]
    rate_text = f"{rate / 1e3:,.1f}k" if rate >= 1e4 else f"{rate:,.0f}"
    return (f"step {f['step']}/{f['total']} · {f['seconds']:.3f} s · loss {f['loss']:.4f} · "
            f"{rate_text} {f['unit']}s/s · {f['mem_gib']:.2f} GiB")


class LiveWatcher(Watcher):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)  # paths and lines stay whole
        self.live = self.console.is_terminal
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.last_print = 0.0
        self.corpus_shown: dict[str, int] = {}
        self.lock = threading.Lock()

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)  # paths and statuses in brackets are not markup

    def _new_bar(self, description: str, total: int) -> None:
        self._close_bar()
        self.bar = Progress(TextColumn("{task.fields[label]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=self.console, transient=False)
        self.task = self.bar.add_task("", total=total, label=description)
        self.bar.start()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def started(self, label: str, log_path: Path, total_steps: int) -> None:
        self._say(f"log: {log_path}")
        self.last_print = 0.0
        if self.live:
            self._new_bar(label, total_steps)

    def step(self, fields: dict) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(self.task, completed=fields["step"], description=describe(fields))
                return
            now = time.monotonic()
            if fields["step"] in (1, fields["total"]) or now - self.last_print >= PLAIN_EVERY_S:
                self.last_print = now
                self._say(f"  {describe(fields)}")

    def line(self, text: str) -> None:
        if text.startswith(_SHOWN_LINES):
            self._say(f"  {text}")

    def finished(self, record: dict, log_path: Path) -> None:
        self._close_bar()
        if record["status"] != "ok":
            self._say(f"[{record['status']}] log of the failed cell: {log_path}")

    def corpus(self, stage: str, done: int, total: int) -> None:
        if self.live:
            if self.bar is None or self.corpus_shown.get(stage) is None:
                self.corpus_shown[stage] = 0
                self._new_bar(stage, total)
            self.bar.update(self.task, completed=done, description="documents")
            if done >= total:
                self._close_bar()
            return
        quarter = 4 * done // max(1, total)
        if quarter > self.corpus_shown.get(stage, -1) or done == 1:
            self.corpus_shown[stage] = quarter
            self._say(f"  {stage}: {done:,}/{total:,} documents")
