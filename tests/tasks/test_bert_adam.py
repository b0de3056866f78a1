"""BERT's Adam (vitrain.tasks.bert_adam): no bias correction, eps 1e-6, decoupled weight decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitrain.tasks.bert_adam import BertAdam


def test_first_steps_match_hand_computation_without_bias_correction():
    w = nn.Parameter(torch.tensor([2.0, -1.0]))
    opt = BertAdam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    g1 = torch.tensor([0.5, 0.1])
    w.grad = g1.clone()
    opt.step()
    m, v = 0.1 * g1, 0.001 * g1**2
    expected = torch.tensor([2.0, -1.0]) - 0.1 * (m / (v.sqrt() + 1e-6) + 0.01 * torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(w.detach(), expected)
    # 3.16x the bias-corrected (Adam) step in the first update
    assert (m / v.sqrt())[0].item() == pytest.approx(0.1 / 0.001**0.5, rel=1e-5)
    g2 = torch.tensor([-0.2, 0.3])
    before = w.detach().clone()
    w.grad = g2.clone()
    opt.step()
    m, v = 0.9 * m + 0.1 * g2, 0.999 * v + 0.001 * g2**2
    torch.testing.assert_close(w.detach(), before - 0.1 * (m / (v.sqrt() + 1e-6) + 0.01 * before))


def test_bias_correction_reproduces_torch_adamw():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(3, 4)), None
    b = nn.Parameter(a.detach().clone())
    ours = BertAdam([a], lr=1e-2, eps=1e-8, weight_decay=0.1, bias_correction=True)
    ref = torch.optim.AdamW([b], lr=1e-2, eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(3, 4)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    # AdamW decays before the Adam step (w *= 1 - lr * wd) and divides eps by the correction
    # differently; the two agree to well below the update size
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=2e-4)


def test_bert_adam_differs_from_adamw_on_the_first_step():
    a = nn.Parameter(torch.ones(2))
    b = nn.Parameter(torch.ones(2))
    a.grad = b.grad = torch.tensor([1.0, 1.0])
    BertAdam([a], lr=1e-3).step()
    torch.optim.AdamW([b], lr=1e-3, weight_decay=0.0).step()
    assert (1 - a.detach()).mean().item() == pytest.approx(3.16e-3, rel=1e-2)  # 0.1 / sqrt(0.001)
    assert (1 - b.detach()).mean().item() == pytest.approx(1e-3, rel=1e-3)
