"""Build a model without ever holding all of it, with exactly the initial weights that a host build
(`models.build_model` under the same seed) would have: FSDP2 builds on the meta device, shards, then materialises
this rank's shard (`build_on_meta`, `materialize`); ZeRO-3 builds inside deepspeed.zero.Init, which partitions each
module as it is constructed (`build_partitioned`).

A host build of a transformers model draws from the CPU generator twice, interleaved: while modules are constructed
(torch's default inits) and in each `PreTrainedModel.init_weights` (transformers' `_init_weights`, run at the end of
every sub-model's constructor). On the meta device neither draws. So the meta build records, in order, every random
operation (by its `nondeterministic_seeded` tag) and every `init_weights` call. After sharding, `materialize` replays
that record: construction draws are re-drawn into scratch tensors (the generator advances exactly as on the host),
and each `init_weights` runs transformers' own per-module init in transformers' order, one transformer block (or one
other top-level piece) at a time, on full-size host tensors that are then copied into this rank's shard (a ZeRO-3
partition, through a gather) and freed. Host memory holds one block's fp32 weights at a time, never the model.
A trick that replaces a module after init is replayed on the module it replaced: the fused CE head (which takes the
Linear head's place, and its weight, after a host build's init) is initialised as that Linear (`_replaced_heads`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

EVENTS = "_pretrain_bench_init_events"  # attribute of a meta-built model: the record `materialize` replays


class _RandomOps(TorchDispatchMode):
    """Records every random aten operation (the ones that advance a generator) as it is dispatched."""

    def __init__(self, events: list):
        super().__init__()
        self.events = events

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.Tag.nondeterministic_seeded in func.tags:
            self.events.append(("random", func, args, kwargs))
        return func(*args, **kwargs)


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` on the meta device (no memory, no draws), with the record of what a host build would draw."""
    from transformers import PreTrainedModel

    events: list = []
    original = PreTrainedModel.init_weights

    def recorded(self):
        events.append(("init", self))
        return original(self)  # on meta it only ties weights

    PreTrainedModel.init_weights = recorded
    try:
        with _RandomOps(events), torch.device("meta"):
            model = build()
    finally:
        PreTrainedModel.init_weights = original
    setattr(model, EVENTS, events)
    return model


def is_meta(model: nn.Module) -> bool:
    return hasattr(model, EVENTS)


def build_partitioned(build: Callable[[], nn.Module], partitioning: Callable[[], contextlib.AbstractContextManager],
                      blocks: Callable[[nn.Module], list[nn.Module]]) -> nn.Module:
    """`build()` inside a partitioning context (DeepSpeed's zero.Init: each module's parameters are partitioned as
    soon as it is constructed, so no rank ever holds the whole model), with a host build's initial weights: the draws
    are recorded on a meta build and replayed into the partitions, one block at a time."""
    from transformers import initialization as hf_init

    record = build_on_meta(build)
    # Construction draws nothing (transformers' no_init_weights) and leaves the generator untouched (fork_rng):
    # the replay below draws every value, from where a host build would start.
    with torch.random.fork_rng(devices=[]), hf_init.no_init_weights(), partitioning():
        model = build()
    model.tie_weights()  # no_init_weights skipped init_weights, which ties after initialising
    names = {id(m): name for name, m in record.named_modules()}
    setattr(model, EVENTS, [("init", model.get_submodule(names[id(e[1])])) if e[0] == "init" else e
                            for e in getattr(record, EVENTS)])
    materialize(model, blocks(model))
    return model


def _host(x):
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device="cpu")
    return torch.device("cpu") if isinstance(x, torch.device) else x


@torch.no_grad()
def materialize(model: nn.Module, blocks: list[nn.Module]) -> None:
    """Fill a meta-built model whose storage now exists (`to_empty` after sharding) with its initial weights.
    `blocks` are the units initialised on the host one at a time (the transformer blocks)."""
    from transformers import PreTrainedModel
    from transformers import initialization as hf_init

    with _replaced_heads(model), hf_init.guard_torch_init_functions():  # as transformers' initialize_weights runs
        host = _HostCopies(model, blocks)
        for kind, *event in getattr(model, EVENTS):
            if kind == "random":
                func, args, kwargs = event
                func(*[_host(a) for a in args], **{k: _host(v) for k, v in kwargs.items()})
            else:
                sub = event[0]
                host.apply(sub, sub._initialize_weights, sub.is_custom_code(), PreTrainedModel)
        host.flush()
    delattr(model, EVENTS)


@contextlib.contextmanager
def _replaced_heads(model: nn.Module) -> Iterator[None]:
    """For the replay, each fused CE head back in its slot as the bias-free Linear it replaced (the same weight
    Parameter): a host build initialised that Linear, in that place of the module order, before the swap."""
    from pretrain_bench.train.fused_ce import FusedLinearCrossEntropyHead

    swapped = []
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, FusedLinearCrossEntropyHead):
                out_features, in_features = getattr(child.weight, "ds_shape", child.weight.shape)
                linear = nn.Linear(in_features, out_features, bias=False, device="meta")
                linear.weight = child.weight
                parent._modules[name] = linear  # the same key: the module order stays
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            parent._modules[name] = child


class _HostCopies:
    """Runs transformers' `smart_apply` (children first, each sub-model with its own `_initialize_weights`) with the
    parameters of whatever is being initialised swapped for full-size host tensors, written back to the real (sharded
    or device) tensors afterwards. Tensors shared between modules (tied embeddings) keep one host copy to the end."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module]):
        self.blocks = {id(b) for b in blocks}
        owners: dict[int, int] = {}
        for m in model.modules():
            for t in (*m._parameters.values(), *m._buffers.values()):
                if t is not None:
                    owners[id(t)] = owners.get(id(t), 0) + 1
        self.shared = {i for i, n in owners.items() if n > 1}
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(real) -> (real, host) of shared tensors

    def apply(self, module: nn.Module, fn, custom: bool, pretrained: type) -> None:
        if all(_initialized(m) for m in module.modules()):  # transformers' init would skip every module
            return
        if id(module) in self.blocks or not any(id(m) in self.blocks for m in module.modules()):
            with self.on_host(module, recurse=True):
                self._smart_apply(module, fn, custom, pretrained)
            return
        for child in module.children():  # an ancestor of blocks: one child at a time, then itself
            self.apply(child, child._initialize_weights if isinstance(child, pretrained) else fn, custom, pretrained)
        with self.on_host(module, recurse=False):
            fn(module, custom)

    def _smart_apply(self, module: nn.Module, fn, custom: bool, pretrained: type) -> None:
        for child in module.children():
            self._smart_apply(child, child._initialize_weights if isinstance(child, pretrained) else fn, custom,
                              pretrained)
        fn(module, custom)

    @contextlib.contextmanager
    def on_host(self, module: nn.Module, recurse: bool) -> Iterator[None]:
        owners = list(module.modules()) if recurse else [module]
        # A module initialised earlier holds its final values: its host copy starts from them (an init of its parent
        # may rewrite part of it); the others start empty, as after `to_empty`.
        tables = [(t, _initialized(m)) for m in owners for t in (m._parameters, m._buffers)]
        swapped, made = [], {}
        for table, done in tables:
            for name, real in list(table.items()):
                if real is None:
                    continue
                if id(real) in self.kept and not done:
                    # A tied tensor already initialised through its first owner (the input embedding): on the host
                    # this later owner (the output head) was still a tensor of its own when its init drew, and was
                    # tied afterwards. It draws into a scratch copy, which is dropped.
                    table[name] = _host_like(real, False)
                    swapped.append((table, name, real, None))
                    continue
                if id(real) not in made:
                    made[id(real)] = self.kept[id(real)][1] if id(real) in self.kept else _host_like(real, done)
                table[name] = made[id(real)]
                swapped.append((table, name, real, id(real)))
        try:
            yield
        finally:
            for table, name, real, key in swapped:
                table[name] = real
                if key is None or key not in made:
                    continue
                if key in self.shared:  # tied: its host copy stays until every owner has been initialised
                    self.kept[key] = (real, made[key])
                else:
                    _write(real, made.pop(key))

    def flush(self) -> None:
        for real, copy in self.kept.values():
            _write(real, copy)
        self.kept.clear()


def _initialized(module: nn.Module) -> bool:
    return getattr(module, "_is_hf_initialized", False)


@contextlib.contextmanager
def _gathered(real: torch.Tensor, modify: bool) -> Iterator[None]:
    """A ZeRO-3 partitioned parameter gathered whole for the body (and, if `modify`, partitioned again from rank 0's
    values afterwards); any other tensor as it is."""
    if not hasattr(real, "ds_id"):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([real], modifier_rank=0 if modify else None):
        yield


def _host_like(real: torch.Tensor, with_values: bool) -> torch.Tensor:
    # The full shape: a DTensor's own, a ZeRO-3 parameter's ds_shape (its .shape is that of an empty placeholder).
    shape = getattr(real, "ds_shape", real.shape)
    if with_values:  # every rank runs the same materialisation, so all take part in the gather
        with _gathered(real, modify=False):
            host = (real.full_tensor() if hasattr(real, "full_tensor") else real).detach().to("cpu", copy=True)
    else:
        host = torch.empty(shape, dtype=real.dtype, device="cpu")
    return nn.Parameter(host, requires_grad=real.requires_grad) if isinstance(real, nn.Parameter) else host


def _write(real: torch.Tensor, host: torch.Tensor) -> None:
    """Copy the full host tensor into the real one: this rank's dim-0 chunk of an FSDP2-sharded DTensor (FSDP2
    shards with torch.chunk), a ZeRO-3 parameter through a gather (every rank holds the same values), or all of a
    plain tensor."""
    from torch.distributed.tensor import DTensor

    if isinstance(real, DTensor):
        local = real.to_local()
        mesh = real.device_mesh
        chunks = host.chunk(mesh.size(), dim=0)
        rank = mesh.get_local_rank()
        if local.numel():
            local.copy_(chunks[rank])
        return
    with _gathered(real, modify=True):
        real.data.copy_(host)
