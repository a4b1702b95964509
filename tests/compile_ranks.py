"""Run under torchrun by test_compile.py: train several cells in sequence in the same ranks, so that one launch
(one ~9 s import of torch, transformers and DeepSpeed) checks every backend, eager and compiled.

argv: a JSON file with [{"name": …, "config": resolved config dict}, …] and the output JSON path (rank 0 writes
{name: {"losses": […], "compile": dynamo's counters}}).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch._dynamo.utils import counters

from pretrain_bench import config
from pretrain_bench.train import loop, measurement, strategies, synthetic, tricks, worker


def train(cfg: config.BenchConfig, rt) -> dict:
    torch._dynamo.reset()  # every cell compiles afresh and counts only its own graphs
    counters.clear()
    tricks.apply_process_settings(cfg)
    torch.manual_seed(cfg.seed)
    strategy = strategies.create(cfg, rt)
    model = strategy.wrap(tricks.build_model(cfg, compile_blocks=strategy.compiles_blocks))
    data = synthetic.synthetic(cfg.model, cfg.seed, rt.device)
    logs = loop.train(model, strategy, data, rt, cfg.micro_batch, cfg.warmup_steps + cfg.steps)
    return {"losses": [log.loss for log in logs], "compile": measurement.compile_counters()}


def main(cells_path: str, out_path: str) -> None:
    cells = json.loads(Path(cells_path).read_text())
    configs = [(c["name"], config.from_dict(c["config"])) for c in cells]
    rt = worker.runtime(configs[0][1])
    results = {}
    for name, cfg in configs:
        results[name] = train(cfg, rt)
        if rt.rank == 0:
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    if rt.rank == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # as the worker does: gloo's teardown can abort after all work is done


if __name__ == "__main__":
    main(*sys.argv[1:3])
