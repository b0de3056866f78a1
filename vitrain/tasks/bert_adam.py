"""BERT's Adam: decoupled weight decay, epsilon 1e-6 and no bias correction.

google-research/bert ``optimization.py`` (``AdamWeightDecayOptimizer``) updates each parameter
with ``m / (sqrt(v) + eps) + weight_decay * w``, scaled by the learning rate, where ``m`` and
``v`` are the raw exponential moving averages of the gradient and its square: unlike Adam and
torch's ``AdamW`` they are *not* divided by ``1 - beta ** step``. For a steady gradient this
makes the early updates larger by ``(1 - beta1^t) / sqrt(1 - beta2^t)`` (betas 0.9/0.999: 3.2x
at step 1, ~6.5x at step 10, 3.2x at step 100, 1.26x at step 1000, then -> 1); BERT's 10k-step
warm-up keeps those steps small. The epsilon (1e-6 instead of torch's 1e-8) bounds the step of
parameters with tiny gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class BertAdam(torch.optim.Optimizer):
    """Adam with decoupled weight decay as BERT's reference optimizer.

    For each parameter ``w`` with gradient ``g`` (``t`` = the step count, from 1)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        m_hat, v_hat = (m / (1 - beta1^t), v / (1 - beta2^t)) if bias_correction else (m, v)
        w -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * w)

    Args:
        params: parameters or parameter groups (a group may override any default below).
        lr: learning rate.
        betas: decay rates of the first and second moment averages.
        eps: added to the square root of the second moment (BERT: 1e-6).
        weight_decay: decoupled decay rate (BERT: 0.01; the task's param groups set 0 for
            biases and LayerNorms).
        bias_correction: divide the averages by ``1 - beta ** t`` (Adam); False: BERT.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
    ) -> None:
        beta1, beta2 = betas
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"BertAdam: lr={lr}, eps={eps}, weight_decay={weight_decay}, betas={betas}")
        defaults = dict(
            lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, bias_correction=bias_correction
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
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m, v = exp_avg, exp_avg_sq
                if group["bias_correction"]:
                    step = float(state["step"])
                    m = m / (1 - beta1**step)
                    v = v / (1 - beta2**step)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update.add(param, alpha=group["weight_decay"])
                param.add_(update, alpha=-group["lr"])
        return loss
