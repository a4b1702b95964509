"""The store keeps every record: concurrent writers, torn lines and corrupt lines lose nothing else."""

from __future__ import annotations

import json
import multiprocessing as mp

from test_record import make

from pretrain_bench.bench.store import Store


def _write(root, worker, n):
    store = Store(root)
    base = make([32.0] * 5)
    for i in range(n):
        store.append({**base, "key": f"{worker}-{i}"})


def test_append_and_read(tmp_path):
    store = Store(tmp_path)
    store.append(make([32.0] * 5))
    assert len(store.records()) == 1


def test_concurrent_writers_lose_nothing(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_write, args=(tmp_path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    keys = [r["key"] for r in Store(tmp_path).records()]
    assert sorted(keys) == sorted(f"{w}-{i}" for w in range(4) for i in range(25))


def test_torn_and_corrupt_lines_are_skipped(tmp_path):
    store = Store(tmp_path)
    store.append(make([32.0] * 5))
    with open(store.path, "a") as f:
        f.write("{not json}\n")
        f.write(json.dumps({"schema_version": 0}) + "\n")
        f.write(json.dumps(make([32.0] * 5))[:50])  # a writer died mid-line
    store.append(make([33.0] * 5))
    warnings = []
    records = store.records(warn=warnings.append)
    assert len(records) == 2 and len(warnings) == 3
    assert any("schema_version 0" in w for w in warnings)


def test_unwritable_or_full_store_fails_before_work(tmp_path, monkeypatch):
    import shutil as sh

    import pytest

    store = Store(tmp_path / "s")
    store.append(make([32.0] * 5))
    monkeypatch.setattr(sh, "disk_usage", lambda path: sh._ntuple_diskusage(100, 99, 1))
    with pytest.raises(PermissionError, match="MiB free"):
        store.check_writable()
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="not writable"):
        Store(blocker / "store").check_writable()  # a path under a file can never be created
    assert len(store.records()) == 1  # earlier records untouched


def test_without_flock_the_store_locks_with_a_lock_file_said_once(tmp_path, monkeypatch, capsys):
    """Some NFS and Lustre mounts refuse flock: the store checks its lock before any work and falls back."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    store = Store(tmp_path)
    store.check_writable()
    assert "has no flock (No locks available)" in capsys.readouterr().err
    for _ in range(2):
        store.append(make([32.0] * 5))
    assert len(store.records()) == 2
    assert capsys.readouterr().err == ""  # said once
    assert not (tmp_path / ".records.softlock").exists()  # the soft lock is released
