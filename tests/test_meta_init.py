"""FSDP2 builds the model on the meta device and materialises only each rank's shard, ZeRO-3 builds it inside
zero.Init: the weights equal a host build's for every model family (tied embeddings, buffers and the tricks that swap
modules included), and a rank's host memory stays well under one full copy of the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain_bench import config
from pretrain_bench.train import meta_init, strategies
from pretrain_bench.train.strategies.base import Runtime

CHECK = Path(__file__).with_name("meta_init_check.py")
FAMILIES = ("tiny", "tiny-gpt2", "tiny-llama", "tiny-roberta", "tiny-mamba", "tiny-vit", "tiny-convnext")


def launch(tmp_path: Path, mode: str, *configs: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(CHECK), str(tmp_path), mode, *configs], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_fsdp_builds_on_meta_and_others_on_the_host():
    rt = Runtime(torch.device("cpu"), 0, 0, 1)
    fsdp = strategies.create(config.compose(["model=tiny", "strategy=fsdp"]), rt).build_model()
    assert meta_init.is_meta(fsdp) and all(p.is_meta for p in fsdp.parameters())
    flce = strategies.create(config.compose(["model=tiny", "strategy=fsdp", "tricks=flce"]), rt).build_model()
    assert meta_init.is_meta(flce)  # the fused CE head too: the replay initialises the Linear it replaced
    single = strategies.create(config.compose(["model=tiny"]), rt).build_model()
    assert not meta_init.is_meta(single) and not any(p.is_meta for p in single.parameters())


@pytest.mark.distributed
def test_sharded_weights_equal_a_host_build(tmp_path):
    configs = [f"model={m},hardware=cpu-2,strategy=fsdp" for m in FAMILIES]
    configs += ["model=tiny,hardware=cpu-2,strategy=fsdp,tricks=flce",  # the head swapped after init, tied or not
                "model=tiny-llama,hardware=cpu-2,strategy=fsdp,tricks=flce",
                "model=tiny,hardware=cpu-2,strategy=zero3,tricks=flce",
                "model=tiny,hardware=cpu-2,strategy=fsdp-grad-op,tricks=ac,seed=7",
                "model=tiny-gpt2,hardware=cpu-2,strategy=zero3", "model=tiny-vit,hardware=cpu-2,strategy=zero3",
                "model=tiny-llama,hardware=cpu-2,strategy=zero3-offload"]
    for rank in launch(tmp_path, "compare", *configs):
        for result in rank:
            assert result["n_tensors"] > 20 and result["missing"] == [], result["config"]
            assert result["different"] == [], result["config"]
            assert result["generator_in_step"], result["config"]  # the generator stands where a host build leaves it


@pytest.mark.distributed
def test_a_rank_holds_well_under_one_full_copy(tmp_path):
    """pythia-410m (1.5 GiB of fp32 weights) on 2 ranks: each rank's host memory grows by its shard plus one piece
    (an embedding) at a time, never by the whole model as a host build does."""
    for [result] in launch(tmp_path, "memory", "model=pythia-410m,hardware=cpu-2,strategy=fsdp"):
        assert result["full_gib"] > 1.4
        assert result["rss_growth_gib"] < 0.75 * result["full_gib"], result
