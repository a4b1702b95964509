"""The commands a newcomer types first: `--version`, `list`, `--print-config`, `--config-dir`, and the exit statuses
every command shares (0 ok, 1 crash, 2 bad input, 3 a finding that is not a crash)."""

from __future__ import annotations

import json

import pytest
import yaml

import pretrain_bench
from pretrain_bench import cli, config
from pretrain_bench.analysis import report
from pretrain_bench.bench.store import Store
from pretrain_bench.cli import common


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"pretrain-bench {pretrain_bench.__version__}"


def test_list_names_what_a_run_can_use(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    sections = {line.rstrip(":") for line in out.splitlines() if not line.startswith(" ")}
    assert sections == {"models", "hardware", "strategies", "tricks", "gpus"}
    assert "  pythia-1b      gpt_neox, 1.0B parameters, sequence 2048, global batch 1024" in out
    assert "  2x8xh100     16 × h100 on 2 nodes" in out
    assert "  zero2-offload  DeepSpeed ZeRO-2 with optimizer state and the optimizer step on the CPU" in out
    assert "  naive            Nothing on: fp32, eager attention, for-each AdamW, no compile" in out
    assert cli.main(["list", "gpus"]) == 0
    gpus = capsys.readouterr().out
    assert "  a100-80gb    A100 SXM4 80GB, 80 GiB, 312 TFLOP/s dense bf16" in gpus and "models" not in gpus
    with pytest.raises(SystemExit) as bad:
        cli.main(["list", "modles"])
    assert bad.value.code == 2


def test_print_config_resolves_without_running(tmp_path, capsys):
    store = tmp_path / "store"
    assert cli.main(["run", "model=pythia-1b", "hardware=1xh100", "micro_batch=8", f"store={store}",
                     "--print-config"]) == 0  # no H100 here: nothing was launched or checked against the machine
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["model"]["hidden_size"] == 2048 and cfg["hardware"]["gpu"] == "h100" and cfg["micro_batch"] == 8
    assert "# derived: world size 1, gradient accumulation 128, precision fp32" in out
    assert not store.exists()
    assert cli.main(["target", "model=tiny", "methods=[naive,bf16]", "--print-config"]) == 0  # ride-along options
    assert cli.main(["run", "micro_batch=3", "hardware=cpu-2", "--print-config"]) == 2


def test_own_config_dir_adds_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRETRAIN_BENCH_CONFIG_DIRS", "")  # --config-dir writes it: restored after the test
    (tmp_path / "model").mkdir()
    tiny = (config.CONFIG_DIR / "model" / "tiny.yaml").read_text()
    (tmp_path / "model" / "my-model.yaml").write_text(tiny.replace("name: tiny", "name: my-model")
                                                          .replace("hidden_size: 64", "hidden_size: 96"))
    assert cli.main(["run", "model=my-model", "--print-config"]) == 2  # not known without the directory
    assert "Could not find 'model/my-model'" in capsys.readouterr().err
    assert cli.main(["run", "--config-dir", str(tmp_path), "model=my-model", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["hidden_size"] == 96
    assert cli.main(["list", "models"]) == 0 and "my-model" in capsys.readouterr().out
    assert cli.main(["--config-dir", str(tmp_path / "nowhere"), "list"]) == 2


@pytest.mark.parametrize("statuses, expected", [
    ([("ok", True)], common.OK),
    ([("ok", True), ("oom", False)], common.FINDING),
    ([("ok", False)], common.FINDING),  # MFU above peak or legacy timing
    ([("not_reached", False), ("ok", True)], common.FINDING),
    ([("diverged", False), ("error", False)], common.CRASH),
    ([("timeout", False)], common.CRASH),
])
def test_exit_status_of_records(statuses, expected):
    assert common.exit_status([{"status": s, "valid": v} for s, v in statuses]) == expected


def test_help_documents_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "exit status: 0 success; 1 a crash" in " ".join(capsys.readouterr().out.split())


def failed(r: dict, status: str, error: str) -> dict:
    return {**r, "status": status, "valid": False, "error": error, "timing": None, "throughput": None,
            "flops": None, "key": f"{r['key']}-{status}"}


def test_table_shows_each_failure_with_its_status_and_reason(tmp_path, capsys):
    from test_record import make

    ok = make([32.2] * 5)
    store = Store(tmp_path)
    for r in (ok, failed(ok, "oom", "rank 0: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
              failed(ok, "timeout", "no result after timeout_s=1800 s; all ranks killed"),
              make([0.5] * 5, ("model=pythia-1b", "hardware=1xh100", "tricks=naive", "micro_batch=8"))):
        store.append(r)
    records = list(store.latest().values())
    statuses = [row["status"] for row in report.rows(records)]
    assert statuses[0] == "ok"
    assert "oom: rank 0: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in statuses
    assert "timeout: no result after timeout_s=1800 s; all ranks killed" in statuses
    assert any(s.startswith("invalid: MFU ") and "exceeds the" in s for s in statuses)  # 0.5 s steps: MFU > 100 %
    assert cli.main(["table", "--store", str(tmp_path), "--format", "json", "--tricks", "naive"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["tricks"] == "naive" and row["key"] and row["status"].startswith("invalid: MFU")
    assert cli.main(["table", "--store", str(tmp_path), "--model", "pythia-1b", "--strategy", "single"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if "| pythia-1b |" in line]) == 4
    assert cli.main(["table", "--store", str(tmp_path), "--hardware", "8xh100"]) == 2
    assert "no records in" in capsys.readouterr().err
