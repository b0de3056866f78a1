"""Optimizer parameter groups and learning-rate schedules shared by every task."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(net: nn.Module) -> list[dict]:
    """Split ``net``'s trainable parameters into a decayed and a non-decayed group.

    No weight decay on biases and norm weights (every parameter with fewer than 2 dims) and on
    the names the network lists in ``no_weight_decay()`` (timm ViT: pos_embed, cls_token).
    The decayed group inherits the optimizer's default ``weight_decay``.
    """
    skip = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 5.0,
    min_lr_ratio: float = 0.0,
    cosine: bool = True,
) -> LambdaLR:
    """Linear warm-up from 0 for ``warmup_epochs``, then cosine decay to ``min_lr_ratio * lr``.

    Stepped once per optimizer step. With ``cosine=False`` the rate stays at its peak after
    warm-up (a constant schedule).
    """
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    return LambdaLR(optimizer, lr_factor(total_steps, warmup, min_lr_ratio, cosine))


def lr_factor(
    total_steps: int, warmup_steps: int, min_lr_ratio: float, cosine: bool
) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
