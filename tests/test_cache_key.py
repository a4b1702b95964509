"""A stored measurement is reused only for the same worker environment and the same speed-relevant versions."""

from __future__ import annotations

from pretrain_bench import config
from pretrain_bench.analysis import record
from pretrain_bench.bench import probe
from pretrain_bench.bench.runner import Runner
from pretrain_bench.bench.store import Store

CELL = ["model=tiny", "hardware=cpu-2", "strategy=ddp"]


def key(tmp_path, *overrides):
    return Runner(Store(tmp_path)).key(config.compose([*CELL, *overrides]))


def test_worker_environment_is_part_of_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    plain = key(tmp_path)
    assert key(tmp_path, "+env.PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True") != plain
    assert key(tmp_path, "+env.OMP_NUM_THREADS=7") != plain
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # which devices a job got: the same measurement
    assert key(tmp_path) == plain
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # inherited: the workers see it too
    assert key(tmp_path) != plain


def test_device_library_versions_are_part_of_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "detect_gpu", lambda cfg: "h100")
    driver = {"v": "580.65"}
    monkeypatch.setattr(probe, "device_versions", lambda cfg: {"cuda": "13.0", "cudnn": "91200", "nccl": "2.27.7",
                                                                "driver": driver["v"]})
    cfg = config.compose(["model=tiny", "hardware=1xh100"])
    first = Runner(Store(tmp_path)).key(cfg)
    driver["v"] = "575.51"
    assert Runner(Store(tmp_path)).key(cfg) != first
    assert "torchao" in record.library_versions()


def test_device_versions_are_read_without_a_gpu():
    """The detection script runs on a CPU build of torch too (every version then None), and not at all on CPU
    hardware."""
    versions = probe.device_versions(config.compose(["model=tiny", "hardware=1xh100"]))
    assert set(versions) == {"cuda", "cudnn", "nccl", "driver"}
    assert probe.device_versions(config.compose(CELL)) == {}
