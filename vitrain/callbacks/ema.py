"""Exponential moving average of the weights, on Lightning's ``WeightAveraging``."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging


def ema_with_warmup(decay: float, warmup: bool):
    """An ``AveragedModel`` ``avg_fn``: EMA whose decay ramps up as ``(1+n)/(10+n)`` when ``warmup``.

    ``n`` is the number of updates so far (``AveragedModel.n_averaged``, saved in checkpoints),
    so early averages are not dominated by the random initial weights.
    """

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged))) if warmup else decay
        return d * averaged + (1.0 - d) * current

    return avg_fn


class EMA(WeightAveraging):
    """EMA of the task's weights, updated after every optimizer step.

    Lightning's ``WeightAveraging`` validates with the averaged weights (swapped in for the
    validation epoch), saves them as the checkpoint's ``state_dict`` (the live weights go to
    ``current_model_state`` and are restored on resume), and copies them into the model when
    training ends, so evaluation and export use the averaged weights.

    Args:
        decay: weight of the running average at each update (the cap of the ramp with ``warmup``).
        warmup: ramp the decay up as ``(1 + n) / (10 + n)`` over the first ``n`` updates.
        device: where the averaged copy lives (None: the model's device).
    """

    def __init__(self, decay: float = 0.9998, warmup: bool = True, device: str | None = None) -> None:
        super().__init__(device=device, use_buffers=True, avg_fn=ema_with_warmup(decay, warmup))
        self.decay = decay

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None
