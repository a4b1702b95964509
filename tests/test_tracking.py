"""`logger=wandb` logs each measured record as an offline W&B run (no server, no network)."""

from __future__ import annotations

from test_record import make

from pretrain_bench.bench import tracking


def test_record_is_logged_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracking.log_record(make([32.2] * 5), group="cell-1")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
