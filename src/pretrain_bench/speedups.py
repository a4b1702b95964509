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


def fp8_filter(module: nn.Module, fqn: str) -> bool:
    """Which Linear layers train in float8: not the output head or classifier (its logits feed the loss, where
    precision matters most, as torchao and torchtitan leave it), and only dimensions divisible by 16 (the FP8
    matmul's requirement)."""
    if fqn.split(".")[-1] in ("lm_head", "embed_out", "decoder", "classifier"):
        return False
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_fp8(model: nn.Module) -> nn.Module:
    """Swap eligible nn.Linear layers for torchao's Float8Linear (dynamic tensorwise scaling), in place."""
    from torchao.float8 import convert_to_float8_training

    convert_to_float8_training(model, module_filter_fn=fp8_filter)
    return model
