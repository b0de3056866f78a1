"""LARS (vitrain.tasks.lars) against a step computed by hand, as facebookresearch/mae util/lars.py."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from vitrain.models.vit import create_vit
from vitrain.tasks import ClassificationTask
from vitrain.tasks.lars import LARS


def test_trust_ratio_step_matches_hand_computation():
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    bias = nn.Parameter(torch.tensor([1.0, -1.0]))
    weight.grad = torch.tensor([[0.6, 0.8]])  # ||g|| = 1
    bias.grad = torch.tensor([0.5, 0.25])
    opt = LARS([weight, bias], lr=6.4, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001)
    opt.step()
    # 2-D: update = g * 0.001 * ||w|| / ||g|| = g * 0.005; w -= lr * update
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0 - 6.4 * 0.003, 4.0 - 6.4 * 0.004]]))
    # 1-D (bias): no trust ratio, no decay: plain momentum SGD
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 6.4 * 0.5, -1.0 - 6.4 * 0.25]))
    # second step: mu = 0.9 * mu + update (heavy ball, no dampening)
    w_before = weight.detach().clone()
    weight.grad = torch.tensor([[0.6, 0.8]])
    bias.grad = torch.zeros(2)
    opt.step()
    ratio = 0.001 * torch.linalg.vector_norm(w_before) / 1.0
    mu = 0.9 * torch.tensor([[0.003, 0.004]]) + torch.tensor([[0.6, 0.8]]) * ratio
    torch.testing.assert_close(weight.detach(), w_before - 6.4 * mu)


def test_weight_decay_enters_the_trust_ratio_and_zero_norms_fall_back_to_one():
    weight = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    weight.grad = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    LARS([weight], lr=1.0, momentum=0.0, weight_decay=0.5, trust_coefficient=0.01).step()
    d = torch.tensor([[0.5, 1.0], [1.0, 0.5]])  # g + wd * w
    expected = torch.eye(2) - d * 0.01 * math.sqrt(2) / torch.linalg.vector_norm(d)
    torch.testing.assert_close(weight.detach(), expected)
    zero = nn.Parameter(torch.zeros(2, 2))  # ||w|| = 0: ratio 1
    zero.grad = torch.ones(2, 2)
    LARS([zero], lr=0.1, momentum=0.0).step()
    torch.testing.assert_close(zero.detach(), torch.full((2, 2), -0.1))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="momentum"):
        LARS([nn.Parameter(torch.zeros(1))], momentum=1.5)


def test_linear_probe_trains_only_the_head_with_lars():
    net = create_vit(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3
    )
    task = ClassificationTask(net, optimizer=partial(LARS, lr=6.4, weight_decay=0.0), linear_probe=True)
    opt = task.build_optimizer()
    assert isinstance(opt, LARS) and opt.defaults["trust_coefficient"] == 0.001
    params = [p for g in opt.param_groups for p in g["params"]]
    head = net.head[1]
    assert {id(p) for p in params} == {id(head.weight), id(head.bias)}
    before = head.weight.detach().clone()
    task.train()
    loss = nn.functional.cross_entropy(task(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    # the trust ratio bounds the relative change of the weight to lr * trust_coefficient = 0.0064
    change = torch.linalg.vector_norm(head.weight.detach() - before) / torch.linalg.vector_norm(before)
    assert change.item() == pytest.approx(6.4 * 0.001, rel=1e-4)
