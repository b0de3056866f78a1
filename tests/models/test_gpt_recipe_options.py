"""GPT options of nanoGPT's OpenWebText runs (bias=False, exact GELU) and its weight-decay rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitrain.errors import UserError
from vitrain.models.gpt import create_gpt
from vitrain.tasks.optim import param_groups

TINY = dict(n_layer=1, n_head=2, n_embd=16, n_positions=8)


def test_bias_false_removes_every_bias():
    net = create_gpt("gpt_tiny", vocab_size=20, bias=False, **TINY)
    assert not [n for n, _ in net.named_parameters() if n.endswith("bias")]
    with_bias = create_gpt("gpt_tiny", vocab_size=20, **TINY)
    assert [n for n, _ in with_bias.named_parameters() if n.endswith("bias")]  # GPT-2's default


def test_exact_gelu_changes_the_mlp_as_nn_gelu():
    torch.manual_seed(0)
    tanh = create_gpt("gpt_tiny", vocab_size=20, **TINY).eval()
    exact = create_gpt("gpt_tiny", vocab_size=20, gelu="exact", **TINY).eval()
    exact.load_state_dict(tanh.state_dict())
    x = torch.randn(2, 4, 16)
    mlp = exact.blocks[0].mlp
    torch.testing.assert_close(mlp(x), mlp.proj(F.gelu(mlp.fc(x))))  # erf GELU (nanoGPT nn.GELU)
    assert not torch.allclose(mlp(x), tanh.blocks[0].mlp(x))
    with pytest.raises(UserError, match="model.net.gelu='relu'"):
        create_gpt("gpt_tiny", vocab_size=20, gelu="relu", **TINY)


def test_hf_weights_need_gpt2_architecture(tmp_path):
    with pytest.raises(UserError, match="model.net.bias=true"):
        create_gpt("gpt_tiny", vocab_size=20, bias=False, hf_weights=str(tmp_path / "w.safetensors"), **TINY)


def test_embeddings_are_decayed_as_nanogpt():
    net = create_gpt("gpt_tiny", vocab_size=20, bias=False, **TINY)
    decay, no_decay = param_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    # karpathy/nanoGPT model.py configure_optimizers: every parameter with dim >= 2
    assert decayed == {n for n, p in net.named_parameters() if p.dim() >= 2}
    assert {"wte.weight", "wpe.weight"} <= decayed
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in net.named_parameters() if p.dim() < 2}
