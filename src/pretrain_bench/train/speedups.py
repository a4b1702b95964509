"""The faster-method tricks that are settings rather than code: SDPA kernel choice, compile mode, FP8 Linear layers.

Kept apart from `tricks.py` so that each stays small; `tricks.py` calls these in its fixed order.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrain_bench.config import TricksConfig

# SDPA kernel -> the torch.backends.cuda switch that enables it. The switches also govern CPU dispatch (a CPU has a
# flash-style kernel and the math one), so `math` is meaningful, and testable, on CPU.
_SDPA_SWITCHES = {"flash": torch.backends.cuda.enable_flash_sdp,
                  "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
                  "cudnn": torch.backends.cuda.enable_cudnn_sdp, "math": torch.backends.cuda.enable_math_sdp}


def set_sdpa_backend(backend: str) -> None:
    """Process-wide SDPA kernel choice: `auto` enables every kernel (PyTorch picks), else only the one named.

    Process-wide switches rather than a `sdpa_kernel` context manager around forward: the switches are read wherever
    SDPA dispatches, so one setting made before the model runs covers forward, backward (whose kernel follows the
    forward's), evaluation, and torch.compile, which reads them when it traces a block and bakes the choice into the
    graph. A context manager would need the training loop to enter it around every forward, and a compiled graph
    traced inside it would keep its choice anyway. Only the named kernel is enabled, so a kernel that cannot run the
    shapes or dtypes fails loudly instead of silently falling back to another one.
    """
    for name, switch in _SDPA_SWITCHES.items():
        switch(backend in ("auto", name))


def compile_kwargs(tr: TricksConfig) -> dict:
    """Keyword arguments for torch.compile (per block, or DeepSpeed's engine.compile(compile_kwargs=…))."""
    return {} if tr.compile_mode == "default" else {"mode": tr.compile_mode}


# Mamba's mixer hands these layers' `.weight` straight to the fused kernel (transformers MambaMixer.forward:
# mamba_inner_fn(…, self.x_proj.weight, self.dt_proj.weight, self.out_proj.weight, …); the PyTorch path also reads
# dt_proj.weight): a Float8Linear there would never run its float8 forward. in_proj is called as a module.
_WEIGHT_READ_DIRECTLY = {("mixer", "x_proj"), ("mixer", "dt_proj"), ("mixer", "out_proj")}


def fp8_filter(module: nn.Module, fqn: str) -> bool:
    """Which Linear layers train in float8 (torchao's `module_filter_fn(module, fqn)`): not the output head or
    classifier (its logits feed the loss, where precision matters most, as torchao and torchtitan leave it), not
    layers whose weight the parent uses without calling them (Mamba's mixer), and only dimensions divisible by 16
    (the FP8 matmul's requirement). The fused linear-CE head is not an nn.Linear, so it is never converted."""
    parts = tuple(fqn.split("."))
    if parts[-1] in ("lm_head", "embed_out", "decoder", "classifier") or parts[-2:] in _WEIGHT_READ_DIRECTLY:
        return False
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_fp8(model: nn.Module) -> nn.Module:
    """Swap eligible nn.Linear layers for torchao's Float8Linear (dynamic tensorwise scaling), in place.

    torchao's default Float8LinearConfig: tensorwise scales and `enable_fsdp_float8_all_gather=False`, so FSDP2
    all-gathers bf16 weights and each Float8Linear casts them (torchtitan's default too). Float8 all-gather would
    halve that traffic but needs `precompute_float8_dynamic_scale_for_fsdp` after every optimizer step; not wired.
    Fails when nothing was converted: a record must not claim float8 matmuls that never ran.
    """
    from torchao.float8 import convert_to_float8_training

    convert_to_float8_training(model, module_filter_fn=fp8_filter)
    if not any(type(m).__name__ == "Float8Linear" for m in model.modules()):
        raise ValueError("tricks.fp8: no Linear layer of this model qualifies for float8 (dimensions divisible by "
                         "16, not the output head)")
    return model
