"""Models are built from config alone, and the FLOPs formula counts what the hardware actually multiplies."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pretrain_bench import config
from pretrain_bench.spec import models


def test_built_model_matches_analytic_parameter_count():
    for name in ("tiny", "pythia-14m"):
        m = config.compose([f"model={name}"]).model
        model = models.build_model(m, attention="eager")
        assert sum(p.numel() for p in model.parameters()) == models.num_params(m)
        assert len(models.blocks(model, m)) == m.num_layers
        assert {type(b).__name__ for b in models.blocks(model, m)} == {models.family(m).block_class}
    assert models.num_params(config.compose(["model=pythia-14m"]).model) == 14_067_712


def test_flops_formula_matches_flop_counter():
    """FlopCounterMode counts every matmul of forward + backward (attention over the full T×T scores, like ours)."""
    m = config.compose(["model=tiny", "model.seq_len=32"]).model
    model = models.build_model(m, attention="eager")
    ids = torch.randint(m.vocab_size, (2, m.seq_len))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops() / ids.numel()
    assert abs(counted - models.flops_per_token(m)) / counted < 1e-9


def test_same_seed_same_weights():
    m = config.compose(["model=tiny"]).model
    torch.manual_seed(3)
    a = models.build_model(m).state_dict()
    torch.manual_seed(3)
    b = models.build_model(m).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
