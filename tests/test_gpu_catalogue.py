"""The GPU catalogue read from configs/gpu/*.yaml: every entry complete, device names matched to the most specific."""

import pytest

from pretrain_bench.spec import gpus


def test_every_entry_has_its_datasheet_numbers():
    assert {"h100", "h100-nvl", "h800", "h200", "h200-nvl", "gh200", "b200", "l4", "a10g", "a40", "rtx6000-ada",
            "rtx5090", "a100-40gb", "a100-80gb", "rtx3090", "v100", "cpu"} <= set(gpus.CATALOGUE)
    for spec in gpus.CATALOGUE.values():
        if spec.key in ("cpu", "unknown"):
            continue
        assert spec.memory_bandwidth > 1e11 and spec.pcie_bandwidth > 0 and spec.source, spec.key
        assert spec.peak("fp16") >= spec.peak("fp32") > 0, spec.key


def test_h100_keeps_its_published_figures():
    h100 = gpus.gpu("h100")
    assert h100.peak("bf16") == pytest.approx(989.4e12)
    assert (h100.memory_bandwidth, h100.nvlink_bandwidth, h100.memory_gib) == (3350e9, 450e9, 80)


@pytest.mark.parametrize(("device", "key"), [
    ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", "h200-nvl"), ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 NVL", "h100-nvl"), ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA L4", "l4"), ("NVIDIA L40S", "l40s"), ("NVIDIA A10G", "a10g"), ("NVIDIA A40", "a40"),
    ("NVIDIA RTX A6000", "a6000"), ("NVIDIA RTX 6000 Ada Generation", "rtx6000-ada"),
    ("NVIDIA GeForce RTX 5090", "rtx5090"), ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA B200", "b200"),
    ("Some New Accelerator", None)])
def test_identify_takes_the_most_specific_entry(device, key):
    assert gpus.identify(device) == key


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: .*h100"):
        gpus.gpu("h1000")


def fake_machine(monkeypatch, device: str) -> None:
    """This machine shows one CUDA GPU named `device` to torch."""
    from pretrain_bench.bench import probe

    monkeypatch.setattr(probe, "ask_torch", lambda: {"count": 1, "name": device, "error": None})


def test_an_unknown_gpu_runs_with_a_warning_and_its_peak_if_given(monkeypatch, capsys):
    from pretrain_bench import config
    from pretrain_bench.analysis import record
    from pretrain_bench.bench import probe

    fake_machine(monkeypatch, "NVIDIA Some Future GPU")
    with pytest.raises(config.ConfigError, match="unknown .runs with a warning"):
        probe.detect_gpu(config.compose(["hardware=1xh100"]))
    cfg = config.compose(["hardware=1xh100", "hardware.gpu=unknown", "model=pythia-160m", "tricks=free-lunch"])
    assert probe.detect_gpu(cfg) == "unknown" and "MFU stays empty" in capsys.readouterr().err
    env = {"gpu_sku": None}
    m = {"step_s": [1.0] * 5, "legacy_step_s": [1.0] * 5, "first_step_s": 1.0, "setup_s": 1.0, "timed_wall_s": 5.0,
         "losses": [10.0], "grad_norms": [1.0], "skipped_steps": 0, "peak_mem_bytes": 2**30, "mem_kind": "x"}
    assert record.make_record(cfg, "k", "ok", None, m, env)["flops"]["mfu"] is None
    given = config.compose(["hardware=1xh100", "hardware.gpu=unknown", "hardware.peak_tflops=500",
                            "model=pythia-160m", "tricks=free-lunch"])
    assert record.make_record(given, "k", "ok", None, m, env)["flops"]["peak_per_device"] == 500e12
    with pytest.raises(config.ConfigError, match="hardware.peak_tflops"):
        config.compose(["hardware=1xh100", "hardware.peak_tflops=-1"])
