"""Parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from vitrain.models import create_vit
from vitrain.tasks.optim import constant, param_groups, warmup_cosine


@pytest.fixture
def net():
    return create_vit("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32)


def test_no_decay_on_norms_biases_pos_embed_cls_token(net):
    decay, no_decay = param_groups(net)
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in ids}
    assert {"pos_embed", "cls_token", "norm.weight", "norm.bias", "head.bias"} <= names
    assert {"blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "patch_embed.proj.bias"} <= names
    decayed = {n for n, p in net.named_parameters() if id(p) not in ids}
    assert decayed == {n for n, p in net.named_parameters() if p.ndim >= 2} - {"pos_embed", "cls_token"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_frozen_parameters_are_left_out(net):
    net.patch_embed.requires_grad_(False)
    groups = param_groups(net)
    assert all(p.requires_grad for g in groups for p in g["params"])


def lrs(total, steps_per_epoch, schedule=warmup_cosine, **kwargs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedule(opt, total_steps=total, steps_per_epoch=steps_per_epoch, **kwargs)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_cosine_to_min():
    lr = lrs(100, steps_per_epoch=10, warmup_epochs=2, min_lr_ratio=0.1)
    assert lr[:20] == pytest.approx([(i + 1) / 20 for i in range(20)])
    assert lr[20] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[20:], lr[21:], strict=False))
    assert lr[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert lr[-1] == pytest.approx(0.1, abs=2e-3)


def test_constant_schedule_after_warmup():
    lr = lrs(30, steps_per_epoch=10, schedule=constant, warmup_epochs=1)
    assert lr[9] == pytest.approx(1.0) and set(lr[9:]) == {1.0}
    assert lrs(5, steps_per_epoch=5, schedule=constant, warmup_epochs=0) == [1.0] * 5
