"""Run by torchrun from test_meta_init.py. For each config (overrides joined by commas, configs separated by
spaces): build the model on the meta device under FSDP2, materialise each rank's shard, and report whether the
gathered weights and buffers equal a host build's (`compare`), or this rank's host memory growth (`memory`).
argv: out_dir, mode, then the configs. Not a test module (no test_ prefix)."""

from __future__ import annotations

import json
import os
import resource
import sys

import torch
import torch.distributed as dist

from pretrain_bench import config
from pretrain_bench.train import strategies, tricks
from pretrain_bench.train.strategies.base import Runtime


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def check(overrides: list[str], rt: Runtime, mode: str) -> dict:
    cfg = config.compose(overrides)
    before = rss_gib()
    torch.manual_seed(cfg.seed)
    strategy = strategies.create(cfg, rt)
    model = strategy.wrap(strategy.build_model()) if mode != "host" else tricks.build_model(cfg, False)
    result = {"config": overrides, "rss_growth_gib": rss_gib() - before,
              "full_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30}
    if mode == "compare":
        after_draw = torch.rand(4)  # where the generator stands after the build
        gathered = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).clone()
                    for k, v in [*model.state_dict().items(), *model.named_buffers()]}
        torch.manual_seed(cfg.seed)
        host = tricks.build_model(cfg, compile_blocks=False)
        host_draw = torch.rand(4)
        expected = dict([*host.state_dict().items(), *host.named_buffers()])
        result.update(different=sorted(k for k in expected if not torch.equal(expected[k], gathered[k])),
                      missing=sorted(set(expected) ^ set(gathered)), n_tensors=len(expected),
                      generator_in_step=torch.equal(after_draw, host_draw))
    return result


def main(out_dir: str, mode: str, *configs: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")
    rt = Runtime(torch.device("cpu"), rank, rank, world)
    results = [check(c.split(","), rt, mode) for c in configs]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
