"""Run by torchrun from test_meta_init.py. For each config (overrides joined by commas, configs separated by
spaces): build the model as its strategy does (FSDP2: on the meta device, then each rank's shard; ZeRO-3: inside
zero.Init), and report whether the gathered weights and buffers equal a host build's (`compare`), or this rank's host
memory growth (`memory`; `host` measures a host build instead).
argv: out_dir, mode, then the configs. Not a test module (no test_ prefix)."""

from __future__ import annotations

import contextlib
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
    if mode == "host":
        model = tricks.build_model(cfg, False)
    elif cfg.strategy.backend == "deepspeed":
        model = strategy.build_model()  # partitioned; the engine (wrap) would only cast and move it
    else:
        model = strategy.wrap(strategy.build_model())
    result = {"config": overrides, "rss_growth_gib": rss_gib() - before,
              "full_gib": sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in model.parameters()) / 2**30}
    if mode == "compare":
        after_draw = torch.rand(4)  # where the generator stands after the build
        gathered = gather(model)
        torch.manual_seed(cfg.seed)
        host = tricks.build_model(cfg, compile_blocks=False)
        host_draw = torch.rand(4)
        expected = dict([*host.named_parameters(remove_duplicate=False), *host.named_buffers()])
        result.update(different=sorted(k for k in expected if not torch.equal(expected[k], gathered[k])),
                      missing=sorted(set(expected) ^ set(gathered)), n_tensors=len(expected),
                      generator_in_step=torch.equal(after_draw, host_draw))
    return result


def gather(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full copies of every weight and buffer: DTensors gathered, ZeRO-3 partitions gathered."""
    gathering = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        import deepspeed

        gathering = deepspeed.zero.GatheredParameters(list(model.parameters()))
    with gathering:
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                for k, v in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]}


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
