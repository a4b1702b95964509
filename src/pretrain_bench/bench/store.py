"""Append-only JSONL store of result records, safe for concurrent writers. No torch.

One file, `records.jsonl`, one record per line. Appends hold an exclusive file lock and write a whole line at once,
so concurrent writers never interleave. Where the file system has no `flock` (some NFS and Lustre mounts) the lock
is a lock file instead (filelock's SoftFileLock), said once. A torn or corrupt line (a crash mid-write, a hand
edit) is reported and skipped when reading, never fatal. Each measurement's spec, rank status files and log go to
`runs/<key>-<kind>/`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, SoftFileLock

from pretrain_bench.analysis import record as rec

MIN_FREE_BYTES = 64 * 2**20  # room for records and worker logs
# flock's errors on file systems without it: Lustre mounted without flock (ENOSYS), NFS without a lock manager
# (ENOLCK), FUSE and others (EOPNOTSUPP).
NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}
SOFT_LOCK_TIMEOUT_S = 600  # a soft lock outlives a writer killed while holding it: wait this long, then say so
_said_soft: set[str] = set()


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / "records.jsonl"
        self.lock = FileLock(str(self.root / ".records.lock"))

    def run_dir(self, name: str) -> Path:
        """Where one measurement's spec, per-rank status files and log live (shared by every node)."""
        return self.root / "runs" / name

    def check_writable(self) -> None:
        """Fail before any work starts if records could not be saved afterwards: write and remove a probe file
        (permission bits alone say nothing to root or about a read-only mount), take the append lock once, and
        require some free space."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-"):
                pass
            if self.path.exists():
                with open(self.path, "ab"):
                    pass
            with self.locked():
                pass
        except OSError as e:
            raise PermissionError(f"store {self.root} is not writable ({e.strerror}); choose another with store=…") \
                from None
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise PermissionError(f"store {self.root} has {free / 2**20:.0f} MiB free, less than "
                                  f"{MIN_FREE_BYTES / 2**20:.0f} MiB: records and logs could not be written")

    @contextlib.contextmanager
    def locked(self):
        """Hold the store's exclusive lock: flock, or a lock file where the file system has no flock."""
        try:
            self.lock.acquire()
        except OSError as e:
            if e.errno not in NO_FLOCK or isinstance(self.lock, SoftFileLock):
                raise
            # Its own name: the flock attempt leaves the usual lock file behind, which a soft lock would take as held.
            self.lock = SoftFileLock(str(self.root / ".records.softlock"), timeout=SOFT_LOCK_TIMEOUT_S)
            if str(self.root) not in _said_soft:
                _said_soft.add(str(self.root))
                print(f"store {self.root}: this file system has no flock ({e.strerror}); locking with the file "
                      f"{self.lock.lock_file} instead (if a writer is killed holding it, remove it by hand)",
                      file=sys.stderr)
            self.lock.acquire()
        try:
            yield
        finally:
            self.lock.release()

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        with self.locked():
            with open(self.path, "a+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() and self._last_byte(f) != b"\n":
                    f.write(b"\n")  # a previous writer died mid-line: keep that torn line separate
                f.write(line.encode())
                f.flush()
                os.fsync(f.fileno())

    @staticmethod
    def _last_byte(f) -> bytes:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(0, os.SEEK_END)
        return last

    def records(self, warn=lambda msg: print(msg, file=sys.stderr)) -> list[rec.Record]:
        return list(self._read(warn))

    def latest(self, warn=lambda msg: print(msg, file=sys.stderr)) -> dict[tuple[str, str], rec.Record]:
        """The newest record per (key, kind): a re-measured cell supersedes its older records."""
        return {(r["key"], r["kind"]): r for r in self._read(warn)}

    def _read(self, warn) -> Iterator[rec.Record]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    warn(f"{self.path}:{number}: skipped a corrupt or truncated line")
                    continue
                if found := rec.problems(data):
                    warn(f"{self.path}:{number}: skipped a record: {'; '.join(found)}")
                    continue
                yield rec.Record(data)
