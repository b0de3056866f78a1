"""Every recipe's learning-rate trajectory, through its ``conf/scheduler`` option, equals the schedule
it had before the schedules moved into one module with one warm-up unit (epochs).

The reference below is written in each recipe's original unit (optimizer steps for the language
recipes, epochs for the others), independently of ``vitrain.tasks.optim``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers import compose_train


def reference(step: int, warmup: int, end: int, decay: str, min_lr_ratio: float) -> float:
    """The old ``warmup_cosine`` / ``warmup_decay`` factor with ``warmup`` and ``end`` in steps."""
    warmup = min(warmup, max(end - 1, 0))
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(end - warmup, 1), 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
    return min_lr_ratio + (1 - min_lr_ratio) * shape


# recipe -> (total optimizer steps, steps per epoch as per_step_schedule computes it, the old
# schedule: warm-up steps, end of decay in steps, decay, min_lr_ratio). max_steps runs
# (trainer.max_epochs=-1) count as one epoch; image recipes use 10 steps per epoch.
def epochs(warmup_epochs: float, max_epochs: int, min_lr_ratio: float, spe: int = 10):
    return max_epochs * spe, spe, (round(warmup_epochs * spe), max_epochs * spe, "cosine", min_lr_ratio)


RECIPES = {
    None: epochs(5, 40, 0.01),  # the default: conf/scheduler/warmup_cosine.yaml, trainer.max_epochs 40
    "gpt2_124m_owt": (600_000, 600_000, (2000, 600_000, "cosine", 0.1)),
    "bert_base": (900_000, 900_000, (10_000, 1_000_000, "linear", 0.0)),
    "bert_base_512": (1_000_000, 1_000_000, (10_000, 1_000_000, "linear", 0.0)),
    "gpt_cpu": (864, 54, (30, 864, "cosine", 0.1)),
    "bert_cpu": (944, 59, (100, 944, "linear", 0.0)),
    "detr_shapes": epochs(1, 20, 0.01),
    "digits_mae_finetune": epochs(1, 5, 0.01),
    "digits_mae_pretrain": epochs(3, 20, 0.01),
    "digits_patch_size": epochs(1, 15, 0.01),
    "digits_vit_ti16": epochs(5, 40, 0.01),
    "digits_vit_vs_t2t": epochs(2, 10, 0.01),
    "mae_vit_b16_finetune": epochs(5, 100, 5e-4, spe=1251),
    "mae_vit_b16_linprobe": epochs(10, 90, 0.0, spe=78),
    "mae_vit_b16_pretrain": epochs(40, 800, 0.0, spe=312),
    # 10 warm-up epochs (issue 14), cosine until epoch 300, then 10 cool-down epochs at the min lr:
    # the authors' main.py (--epochs 300 --cooldown-epochs 10)
    "t2t_vit_14_imagenet": (310 * 2502, 2502, (10 * 2502, 300 * 2502, "cosine", 0.02)),
    "vit_b16_imagenet": epochs(5, 300, 0.01, spe=1251),
}


def factor_of(experiment: str | None, total: int, steps_per_epoch: float):
    cfg = compose_train(*([f"experiment={experiment}"] if experiment else []))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = instantiate(cfg.scheduler)(optimizer, total_steps=total, steps_per_epoch=steps_per_epoch)
    assert cfg.scheduler._target_.startswith("vitrain.tasks.optim.")
    return schedule.lr_lambdas[0]


def steps_to_check(total: int, *points: int) -> list[int]:
    """About 2000 steps spread over the run, plus every step next to a warm-up or decay point."""
    near = {s + d for p in points for d in range(-2, 3) for s in (p,) if 0 <= s + d < total + 5}
    return sorted(set(range(0, total + 5, max(total // 2000, 1))) | near | {total - 1, total})


@pytest.mark.parametrize("experiment", list(RECIPES))
def test_recipe_lr_trajectory_is_unchanged(experiment):
    total, spe, (warmup, end, decay, min_lr_ratio) = RECIPES[experiment]
    factor = factor_of(experiment, total, spe)
    for step in steps_to_check(total, warmup, end):
        expected = reference(step, warmup, end, decay, min_lr_ratio)
        assert factor(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), (experiment, step)


def test_detr_recipe_step_decay_is_unchanged():
    spe = 3697  # COCO train2017 at batch 4 x 8 GPUs
    factor = factor_of("detr_r50_coco", 500 * spe, spe)
    assert factor(0) == 1.0 and factor(400 * spe - 1) == 1.0
    assert factor(400 * spe) == pytest.approx(0.1) and factor(500 * spe - 1) == pytest.approx(0.1)


@pytest.mark.parametrize("option", ["warmup_cosine", "warmup_linear", "step_decay", "constant"])
def test_every_scheduler_option_builds_a_per_step_schedule(option):
    cfg = compose_train(f"scheduler={option}")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = instantiate(cfg.scheduler)(optimizer, total_steps=40, steps_per_epoch=4)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert all(0 <= lr <= 1.0 for lr in lrs) and max(lrs) == pytest.approx(1.0)
    if option in ("warmup_cosine", "warmup_linear"):
        assert lrs[-1] < lrs[30] < 1.0
    else:
        assert lrs == [1.0] * 40  # no warm-up and no drop by default
