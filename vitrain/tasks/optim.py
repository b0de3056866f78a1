"""Optimizer parameter groups and learning-rate schedules shared by every task."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from vitrain.errors import UserError


def param_groups(net: nn.Module, layer_decay: float | None = None, decay_1d: bool = False) -> list[dict]:
    """Split ``net``'s trainable parameters into decayed and non-decayed groups.

    No weight decay on biases and norm weights (every parameter with fewer than 2 dims; with
    ``decay_1d=True`` these are decayed too, as DETR's reference decays every parameter) and on
    the names the network lists in ``no_weight_decay()`` (timm ViT: pos_embed, cls_token). The
    decayed groups inherit the optimizer's default ``weight_decay``. Frozen parameters
    (``requires_grad=False``) are left out.

    Without ``layer_decay``: ``[decay, no_decay]``. With ``layer_decay`` (layer-wise learning-rate
    decay, BEiT / MAE fine-tuning) every layer gets its own pair of groups (empty ones are left
    out), in layer order, each with ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``
    (see :func:`layer_id`) and a ``name`` (``layer<id>`` / ``layer<id>_no_decay``, shown by the
    learning-rate monitor). torch optimizers ignore ``lr_scale``: :func:`build_optimizer` applies
    it to each group's ``lr`` before a schedule is attached.
    """
    net = getattr(net, "_orig_mod", net)  # torch.compile'd: the names of the original module
    skip = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
    num_layers = 0
    if layer_decay is not None:
        if not 0 < layer_decay <= 1:
            raise UserError(
                f"model.layer_decay={layer_decay}: must be in (0, 1] (0.65-0.75 for ViT-B/L), or null."
            )
        if not hasattr(net, "blocks"):
            raise UserError(f"model.layer_decay needs a network with blocks; {type(net).__name__} has none.")
        num_layers = len(net.blocks)
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        decays = not ((param.ndim <= 1 and not decay_1d) or name in skip or name.split(".")[-1] in skip)
        layer = layer_id(name, num_layers) if layer_decay is not None else 0
        groups.setdefault((layer, decays), []).append(param)
    if layer_decay is None:
        return [
            {"params": groups.get((0, True), [])},
            {"params": groups.get((0, False), []), "weight_decay": 0.0},
        ]
    out = []
    for layer, decays in sorted(groups, key=lambda key: (key[0], not key[1])):
        group = {
            "params": groups[(layer, decays)],
            "lr_scale": layer_decay ** (num_layers + 1 - layer),
            "name": f"layer{layer}" if decays else f"layer{layer}_no_decay",
        }
        if not decays:
            group["weight_decay"] = 0.0
        out.append(group)
    return out


def layer_id(name: str, num_layers: int) -> int:
    """The layer of parameter ``name`` of a ViT with ``num_layers`` blocks, for layer decay.

    ``blocks.<i>.*`` -> ``i + 1``; the final norms and the head (``norm``, ``fc_norm``,
    ``head``, ``attn_pool``) -> ``num_layers + 1``; everything else (patch embedding, class and
    position embeddings, T2T module) -> 0.
    """
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1]) + 1
    if parts[0] in ("norm", "fc_norm", "head", "attn_pool"):
        return num_layers + 1
    return 0


def build_optimizer(
    factory: Callable[..., torch.optim.Optimizer], groups: list[dict]
) -> torch.optim.Optimizer:
    """``factory(groups)`` with each group's ``lr`` multiplied by its ``lr_scale`` (if any).

    A schedule created afterwards (``LambdaLR``) takes each group's scaled ``lr`` as its
    ``initial_lr``, so the scale holds at every step: ``lr = factor(step) * base_lr * lr_scale``.
    """
    optimizer = factory(groups)
    for group in optimizer.param_groups:
        if "lr_scale" in group:
            group["lr"] = group["lr"] * group["lr_scale"]
    return optimizer


def per_step_schedule(
    optimizer: torch.optim.Optimizer, scheduler_factory, trainer
) -> dict | torch.optim.Optimizer:
    """What ``configure_optimizers`` returns: ``optimizer`` with ``scheduler_factory``'s schedule
    stepped every optimizer step (or ``optimizer`` alone when there is no factory).

    The factory is called with the optimizer, the total optimizer steps of the run and the
    steps per epoch (both from the Lightning ``trainer``).
    """
    if scheduler_factory is None:
        return optimizer
    total = int(trainer.estimated_stepping_batches)
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
    scheduler = scheduler_factory(optimizer, total_steps=total, steps_per_epoch=total / epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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
