"""LARS: layer-wise adaptive rate scaling (You et al. 2017), as MAE's linear probing uses it.

The update of every parameter with 2 or more dimensions (weight matrices, conv kernels) is
rescaled by its *trust ratio* ``trust_coefficient * ||w|| / ||g + weight_decay * w||`` before
momentum is applied; 1-D parameters (biases, norm scales) get neither weight decay nor the trust
ratio. This follows the optimizer of facebookresearch/mae ``util/lars.py`` (itself from MoCo v3),
which ``main_linprobe.py`` uses with lr ``0.1 * batch / 256`` (6.4 at batch 16384), momentum 0.9,
trust coefficient 0.001 and no weight decay: without the trust ratio that lr would be ~1000x too
large.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a per-parameter trust ratio for parameters of ``ndim >= 2``.

    For each parameter ``w`` with gradient ``g``:

    * ``ndim >= 2``: ``d = g + weight_decay * w``, then ``d *= trust_coefficient * ||w|| / ||d||``
      (the factor is 1 when either norm is 0);
    * ``ndim < 2``: ``d = g`` (no decay, no scaling);
    * ``mu = momentum * mu + d``; ``w -= lr * mu``.

    Args:
        params: parameters or parameter groups (a group may override any default below).
        lr: learning rate.
        weight_decay: L2 penalty added to the gradient of ``ndim >= 2`` parameters.
        momentum: momentum factor (heavy ball, no dampening).
        trust_coefficient: the ``eta`` of the trust ratio (MAE / MoCo v3: 0.001).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError(
                f"LARS: lr={lr}, weight_decay={weight_decay} must be >= 0, momentum={momentum} in "
                f"[0, 1), trust_coefficient={trust_coefficient} > 0"
            )
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if param.ndim > 1:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = (
                        torch.linalg.vector_norm(param),
                        torch.linalg.vector_norm(update),
                    )
                    ratio = group["trust_coefficient"] * param_norm / update_norm
                    usable = (param_norm > 0) & (update_norm > 0)
                    update = update * torch.where(usable, ratio, torch.ones_like(ratio))
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
        return loss
