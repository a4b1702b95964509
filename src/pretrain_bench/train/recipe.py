"""The recipe's optimizer and learning-rate schedule: the *what* of training, the same under every backend and trick
set (a trick may only choose the optimizer's implementation, e.g. fused AdamW)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrain_bench.config import RecipeConfig
from pretrain_bench.spec.training_args import warmup_steps


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases and norm gains are not decayed (as GPT-NeoX and nanoGPT do)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:  # a ZeRO-3 partitioned parameter's own shape is a placeholder's; ds_shape is its shape
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: RecipeConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr,
                             betas=(recipe.beta1, recipe.beta2), eps=recipe.eps,
                             fused=True if fused else None, foreach=False if fused else None)


def lr_lambda(recipe: RecipeConfig):
    """Linear warm-up to the peak, then cosine decay to min_lr_ratio × peak at the recipe's last step."""
    warmup = warmup_steps(recipe)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, recipe.steps - warmup))
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: RecipeConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe))
