"""Live progress: rank 0's step line round-trips through the log, a follower hands every line over while the ranks
write, the terminal-less display stays short, real text reports its tokenising, and `run` shows the log's path."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import pytest
from rich.console import Console

from pretrain_bench.bench.progress import Watcher, following
from pretrain_bench.cli.progress import LiveWatcher
from pretrain_bench.spec.progress import parse_step, step_line


def test_step_line_round_trips():
    line = step_line(3, 8, 0.5, 6.25, 1.5, samples=16, tokens_per_sample=128, unit="token", mem_gib=1.25)
    assert line == "step 3/8 | 0.500 s | loss 6.2500 | grad_norm 1.500 | 4,096 tokens/s | mem 1.25 GiB"
    assert parse_step(line) == {"step": 3, "total": 8, "seconds": 0.5, "loss": 6.25, "grad_norm": 1.5,
                                "rate": 4096.0, "unit": "token", "mem_gib": 1.25}
    assert parse_step(step_line(1, 2, 0.1, float("nan"), 0.0, 4, 1, "image", 0.0))["unit"] == "image"
    assert parse_step("eval after step 50: validation loss 3.2 (target 3.0)") is None


class Recorder(Watcher):
    def __init__(self):
        self.steps, self.lines = [], []

    def step(self, fields):
        self.steps.append((fields["step"], time.monotonic()))

    def line(self, text):
        self.lines.append(text)


def test_follower_sees_lines_while_they_are_written(tmp_path):
    log = tmp_path / "log.txt"
    log.touch()
    seen = Recorder()
    with following(log, seen, interval_s=0.05), open(log, "a") as out:
        for i in range(1, 4):
            out.write(step_line(i, 3, 0.1, 5.0, 1.0, 2, 8, "token", 0.1) + "\n")
            out.flush()
            time.sleep(0.3)
        written = time.monotonic()
        out.write("W1129 a torchrun warning\nno newline at the end")
    assert [s for s, _ in seen.steps] == [1, 2, 3]
    assert seen.steps[0][1] < written - 0.4  # heard while the run went on, not after it
    assert seen.lines == ["W1129 a torchrun warning", "no newline at the end"]


def test_without_a_terminal_steps_are_printed_sparingly(tmp_path):
    out = io.StringIO()
    watcher = LiveWatcher(Console(file=out, force_terminal=False, width=200))
    watcher.started("tiny · ddp", tmp_path / "log.txt", 100)
    for i in range(1, 101):
        watcher.step(parse_step(step_line(i, 100, 0.01, 5.0, 1.0, 8, 64, "token", 0.5)))
    watcher.line("eval after step 100: validation loss 4.1000 (target 4.5)")
    watcher.line("some library warning")
    watcher.finished({"status": "oom"}, tmp_path / "log.txt")
    text = out.getvalue().splitlines()
    assert text[0] == f"log: {tmp_path / 'log.txt'}"
    assert text[1] == "  step 1/100 · 0.010 s · loss 5.0000 · 51.2k tokens/s · 0.50 GiB"
    assert text[2].startswith("  step 100/100") and len(text) == 5  # first and last step only: a fast run
    assert text[3] == "  eval after step 100: validation loss 4.1000 (target 4.5)"
    assert text[4] == f"[oom] log of the failed cell: {tmp_path / 'log.txt'}"


def test_on_a_terminal_a_bar_follows_the_steps(tmp_path):
    out = io.StringIO()
    watcher = LiveWatcher(Console(file=out, force_terminal=True, width=200))
    watcher.started("tiny · ddp", tmp_path / "log.txt", 4)
    for i in range(1, 5):
        watcher.step(parse_step(step_line(i, 4, 0.01, 5.0, 1.0, 8, 64, "token", 0.5)))
    watcher.finished({"status": "ok"}, tmp_path / "log.txt")
    assert "4/4" in out.getvalue() and "step 4/4 · 0.010 s · loss 5.0000" in out.getvalue()


def test_corpus_preparation_reports_each_stage(tmp_path):
    from test_corpus import data_config, documents, write_txt

    from pretrain_bench.data import corpus

    events = []
    lock = threading.Lock()

    def progress(stage, done, total):
        with lock:
            events.append((stage, done, total))

    data = data_config(tmp_path, [write_txt(tmp_path / "docs", documents(300))])
    corpus.prepare(data, 32, seed=0, progress=progress)
    stages = list(dict.fromkeys(stage for stage, _, _ in events))
    assert stages == ["training the tokenizer", "tokenising validation", "tokenising training"]
    for stage in stages:
        done = [d for s, d, _ in events if s == stage]
        assert done == sorted(done) and done[-1] == next(t for s, _, t in events if s == stage)
    events.clear()
    corpus.prepare(data, 32, seed=0, progress=progress)
    assert events == []  # from the cache: nothing to report


@pytest.mark.distributed
def test_run_streams_steps_and_names_the_log(tmp_path):
    def bench(*extra):
        return subprocess.run([sys.executable, "-m", "pretrain_bench.cli", "run", "model=tiny", "hardware=cpu-1",
                               "steps=5", "warmup_steps=1", f"store={tmp_path}", *extra], capture_output=True,
                              text=True)

    done = bench()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("throughput tiny on cpu-1, micro-batch") and "time-out" in lines[1]  # the fitted limit
    lines = lines[1:]
    assert lines[1].startswith(f"log: {tmp_path}/runs/") and lines[1].endswith("-throughput/log.txt")
    assert lines[2].startswith("  step 1/6 · ") and lines[3].startswith("  step 6/6 · ")
    assert lines[4].startswith("[ok] tiny on cpu-1")
    failed = bench("timeout_s=2", "--force")
    assert failed.returncode == 1  # a time-out is a crash
    assert "[timeout] log of the failed cell: " in failed.stdout
