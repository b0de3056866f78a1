"""GPT network: causal masking, exact parameter counts, Hugging Face weights, generation."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vitrain.errors import UserError
from vitrain.models.gpt import GPT_VARIANTS, create_gpt, load_hf_weights

TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=16)


def tiny_gpt(vocab_size: int = 50, **kwargs):
    torch.manual_seed(0)
    return create_gpt("gpt_tiny", vocab_size=vocab_size, **{**TINY, **kwargs}).eval()


def test_logits_at_t_do_not_depend_on_later_tokens():
    net = tiny_gpt()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        a, b = net(idx), net(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # the later positions do see the change


@pytest.mark.parametrize(
    ("name", "hf_arch", "expected"),
    [
        ("gpt2_124m", dict(n_layer=12, n_head=12, n_embd=768), 124_439_808),
        ("gpt2_350m", dict(n_layer=24, n_head=16, n_embd=1024), 354_823_168),
        ("gpt2_774m", dict(n_layer=36, n_head=20, n_embd=1280), 774_030_080),
        ("gpt2_1558m", dict(n_layer=48, n_head=25, n_embd=1600), 1_557_611_200),
    ],
)
def test_parameter_counts_equal_gpt2(name, hf_arch, expected):
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        ours = sum(p.numel() for p in create_gpt(name, vocab_size=50257).parameters())
        hf = sum(p.numel() for p in GPT2LMHeadModel(GPT2Config(**hf_arch)).parameters())
    assert ours == hf == expected


def test_tied_head_and_no_decay_names():
    net = tiny_gpt()
    assert net.lm_head.weight is net.wte.weight
    names = {n for n, _ in net.named_parameters()}
    assert net.no_weight_decay() <= names and "lm_head.weight" not in names


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_hugging_face_weights_give_identical_logits(tmp_path, suffix):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=61,
            n_positions=16,
            n_embd=32,
            n_layer=2,
            n_head=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )  # fmt: skip
    ).eval()
    path = tmp_path / f"model{suffix}"
    state = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    net = create_gpt("gpt_tiny", vocab_size=61, hf_weights=str(path), **TINY).eval()
    idx = torch.randint(0, 61, (2, 16))
    with torch.no_grad():
        assert torch.allclose(net(idx), hf(idx).logits, atol=1e-5)


def test_hugging_face_weights_of_another_size_name_the_file(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=2))
    path = tmp_path / "gpt2.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}, path)
    with pytest.raises(UserError, match="gpt2.safetensors.*does not fit"):
        load_hf_weights(tiny_gpt(vocab_size=60), path)
    with pytest.raises(UserError, match="no such file"):
        load_hf_weights(tiny_gpt(), tmp_path / "missing.safetensors")


def test_generation_is_deterministic_with_top_k_1():
    net = tiny_gpt()
    prompt = torch.tensor([[1, 2, 3]])
    a = net.generate(prompt, 8, temperature=1.0, top_k=1)
    b = net.generate(prompt, 8, temperature=0.7, top_k=1)
    assert a.shape == (1, 11) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    sampled = [
        net.generate(prompt, 8, top_k=10, generator=torch.Generator().manual_seed(3)) for _ in range(2)
    ]
    assert torch.equal(*sampled)


def test_unknown_variant_and_argument():
    with pytest.raises(UserError, match="gpt_tiny"):
        create_gpt("gpt5")
    with pytest.raises(UserError, match="n_layers"):
        create_gpt("gpt_tiny", n_layers=2)
    assert set(GPT_VARIANTS) >= {"gpt2_124m", "gpt2_350m", "gpt2_774m", "gpt2_1558m", "gpt_tiny"}
