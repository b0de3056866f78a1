"""Optimizer parameter groups and learning-rate schedules shared by every task."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from vitrain.errors import UserError, require_choice

LayerMap = tuple[Callable[[str], int], int]
"""``(layer of a parameter name, num_layers)`` for layer decay (see :func:`layer_map`)."""


def param_groups(
    net: nn.Module, layer_decay: float | None = None, decay_1d: bool = False, layers: LayerMap | None = None
) -> list[dict]:
    """Split ``net``'s trainable parameters into decayed and non-decayed groups.

    No weight decay on biases and norm weights (every parameter with fewer than 2 dims; with
    ``decay_1d=True`` these are decayed too, as DETR's reference decays every parameter) and on
    the names the network lists in ``no_weight_decay()`` (timm ViT: pos_embed, cls_token). The
    decayed groups inherit the optimizer's default ``weight_decay``. Frozen parameters
    (``requires_grad=False``) are left out.

    Without ``layer_decay``: ``[decay, no_decay]``. With ``layer_decay`` (layer-wise learning-rate
    decay, BEiT / MAE fine-tuning) every layer gets its own pair of groups (empty ones are left
    out), in layer order, each with ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``
    and a ``name`` (``layer<id>`` / ``layer<id>_no_decay``, shown by the learning-rate monitor).
    The layers are numbered by ``layers`` (a task's own numbering, e.g. SAM's image encoder),
    by default by :func:`layer_map`. torch optimizers ignore ``lr_scale``: :func:`build_optimizer`
    applies it to each group's ``lr`` before a schedule is attached.
    """
    skip = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
    num_layers = 0
    if layer_decay is not None:
        check_layer_decay(layer_decay)
        layer_of, num_layers = layers or layer_map(net)
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        decays = not ((param.ndim <= 1 and not decay_1d) or name in skip or name.split(".")[-1] in skip)
        layer = layer_of(name) if layer_decay is not None else 0
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


def check_layer_decay(layer_decay: float | None) -> None:
    """``model.layer_decay`` is null or in (0, 1]."""
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise UserError(
            f"model.layer_decay={layer_decay}: must be in (0, 1] (0.65-0.75 for ViT-B/L fine-tuning, "
            "0.8 for SAM), or null."
        )


def layer_map(net: nn.Module) -> LayerMap:
    """``(layer of a parameter name, num_layers)`` for layer decay: ids run from 0 (embeddings)
    to ``num_layers + 1`` (the head, at the full learning rate).

    ViTs (a ``blocks`` list: timm ViT, T2T-ViT) use :func:`layer_id`; any other timm model uses
    its ``group_matcher`` (ConvNeXt stages, Swin layers, ResNet stages ...) with the same
    ordering as timm's ``param_groups_layer_decay``.
    """
    if hasattr(net, "blocks"):
        num_layers = len(net.blocks)
        return (lambda name: layer_id(name, num_layers)), num_layers
    if hasattr(net, "group_matcher"):
        from timm.models import group_parameters

        ids = group_parameters(net, net.group_matcher(coarse=False), reverse=True)
        return ids.__getitem__, max(ids.values()) - 1
    raise UserError(
        f"model.layer_decay needs a network with blocks or a timm group_matcher; {type(net).__name__} "
        "has neither: set model.layer_decay=null."
    )


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
    try:
        optimizer = factory(groups)
    except ValueError as err:  # torch checks lr, eps, betas, weight_decay: "Invalid learning rate: -1"
        settings = ", ".join(f"{k}={v}" for k, v in getattr(factory, "keywords", {}).items())
        raise UserError(
            f"optimizer ({settings}): {err}. Fix the optimizer.* value it names (e.g. optimizer.lr must be "
            "positive)."
        ) from err
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


# ---------------------------------------------------------------- schedules
# Every schedule below is a ``conf/scheduler/<name>.yaml`` option, called by
# :func:`per_step_schedule` as ``schedule(optimizer, total_steps, steps_per_epoch)`` and stepped
# once per optimizer step. Warm-up and decay points have ONE unit: epochs (fractions allowed),
# turned into optimizer steps with the run's ``steps_per_epoch``. A run bounded by
# ``trainer.max_steps`` with ``trainer.max_epochs=-1`` counts as one epoch, so there
# ``warmup_epochs`` is the fraction of ``max_steps`` (GPT-2's 2000 of 600k steps: 1/300).


def to_steps(epochs: float, steps_per_epoch: float) -> int:
    """``epochs`` (may be fractional) as a whole number of optimizer steps."""
    if epochs < 0:
        raise UserError(f"scheduler: {epochs} epochs: warm-up and decay points must be >= 0.")
    return int(round(epochs * steps_per_epoch))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 5.0,
    min_lr_ratio: float = 0.0,
    decay_epochs: float | None = None,
) -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_epochs``, then cosine decay to ``min_lr_ratio * lr``
    at ``decay_epochs`` (default: the end of the run), flat afterwards.

    ViT/DeiT/MAE: ``warmup_epochs`` 5-40, ``min_lr_ratio`` ~0; nanoGPT's GPT-2 schedule: 2000
    warm-up steps, cosine to 0.1 of the peak.

    Args:
        optimizer, total_steps, steps_per_epoch: the optimizer, the optimizer steps of the run and
            per epoch (passed by the task).
        warmup_epochs: length of the linear warm-up, in epochs (fractions allowed); it ends at
            least one step before the decay does.
        min_lr_ratio: the learning rate at the end of the decay, as a fraction of the peak.
        decay_epochs: the epoch where the decay reaches ``min_lr_ratio`` (None: the end of the
            run).
    """
    return warmup_decay(
        optimizer, total_steps, steps_per_epoch, warmup_epochs, "cosine", min_lr_ratio, decay_epochs
    )


def warmup_linear(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
    decay_epochs: float | None = None,
) -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_epochs``, then linear decay to ``min_lr_ratio * lr``
    at ``decay_epochs`` (default: the end of the run), flat afterwards (BERT: 10k warm-up steps,
    linear decay to 0).

    Args:
        optimizer, total_steps, steps_per_epoch: the optimizer, the optimizer steps of the run and
            per epoch (passed by the task).
        warmup_epochs: length of the linear warm-up, in epochs (fractions allowed); it ends at
            least one step before the decay does.
        min_lr_ratio: the learning rate at the end of the decay, as a fraction of the peak.
        decay_epochs: the epoch where the decay reaches ``min_lr_ratio`` (None: the end of the
            run).
    """
    return warmup_decay(
        optimizer, total_steps, steps_per_epoch, warmup_epochs, "linear", min_lr_ratio, decay_epochs
    )


def constant(
    optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: float, warmup_epochs: float = 0.0
) -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_epochs``, then the peak learning rate to the end.

    Args:
        optimizer, total_steps, steps_per_epoch: the optimizer, the optimizer steps of the run and
            per epoch (passed by the task).
        warmup_epochs: length of the linear warm-up, in epochs (fractions allowed; 0: none); it
            ends at least one step before the run does.
    """
    return warmup_decay(optimizer, total_steps, steps_per_epoch, warmup_epochs, "none")


def step_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    drop_epochs: list[float] | float = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> LambdaLR:
    """The peak lr (after an optional linear warm-up) multiplied by ``gamma`` at each epoch of
    ``drop_epochs`` (DETR: ``[400]`` of 500 epochs, ``gamma=0.1``).

    Args:
        optimizer, total_steps, steps_per_epoch: the optimizer, the optimizer steps of the run and
            per epoch (passed by the task).
        drop_epochs: the epochs (or one epoch) at which the learning rate drops.
        gamma: the factor of each drop.
        warmup_epochs: length of the linear warm-up, in epochs (fractions allowed); 0: none.
    """
    drops = [drop_epochs] if isinstance(drop_epochs, int | float) else list(drop_epochs)
    drop_steps = sorted(to_steps(e, steps_per_epoch) for e in drops)
    warmup = to_steps(warmup_epochs, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return gamma ** sum(step >= s for s in drop_steps)

    return LambdaLR(optimizer, factor)


DECAYS = ("cosine", "linear", "none")


def warmup_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    decay: str = "cosine",
    min_lr_ratio: float = 0.0,
    decay_epochs: float | None = None,
) -> LambdaLR:
    """What :func:`warmup_cosine`, :func:`warmup_linear` and :func:`constant` share: a linear
    warm-up (clipped to leave at least one step after it), then ``decay`` (``cosine``, ``linear``
    or ``none``) to ``min_lr_ratio`` of the peak at ``decay_epochs`` (None: ``total_steps``)."""
    require_choice("scheduler.decay", decay, DECAYS)
    end = total_steps if decay_epochs is None else to_steps(decay_epochs, steps_per_epoch)
    warmup = min(to_steps(warmup_epochs, steps_per_epoch), max(end - 1, 0))
    return LambdaLR(optimizer, lr_factor(end, warmup, min_lr_ratio, decay))


def lr_factor(
    total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0, decay: str = "cosine"
) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each optimizer step: linear warm-up over
    ``warmup_steps``, then ``decay`` to ``min_lr_ratio`` at ``total_steps``, flat afterwards."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "none":
            return 1.0
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * shape

    return factor
