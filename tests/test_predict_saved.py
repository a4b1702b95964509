"""The activation-memory model against the bytes autograd actually saves (saved_tensors_hooks), on tiny shapes of
GPT-NeoX, Llama and GPT-2, eager and SDPA attention, with and without checkpointing and fused CE: within 10 %."""

from __future__ import annotations

import itertools

import pytest
import torch

from pretrain_bench import config
from pretrain_bench.analysis.perf import memory
from pretrain_bench.analysis.perf.workload import from_config
from pretrain_bench.train import tricks

CASES = list(itertools.product(("tiny", "tiny-llama", "tiny-gpt2"), ("eager", "sdpa"), (0, 2), (False, True)))


def saved_bytes(cfg: config.BenchConfig) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one training forward."""
    torch.manual_seed(0)
    model = tricks.build_model(cfg, compile_blocks=False)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, cfg.model.vocab_size, (cfg.micro_batch, cfg.model.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


@pytest.mark.parametrize(("model", "attention", "ac_every", "fused_ce"), CASES)
def test_activation_model_matches_saved_tensors(model, attention, ac_every, fused_ce):
    overrides = [f"model={model}", "hardware=cpu-1", "tricks=naive", f"tricks.attention={attention}",
                 "micro_batch=4", "model.hidden_size=128", "model.num_layers=4", "model.seq_len=128",
                 f"tricks.fused_linear_ce={str(fused_ce).lower()}"]
    if ac_every:
        overrides += ["tricks.activation_checkpointing=true", f"tricks.ac_every={ac_every}"]
    cfg = config.compose(overrides)
    predicted = memory.saved_bytes(from_config(cfg))
    assert predicted == pytest.approx(saved_bytes(cfg), rel=0.10)
