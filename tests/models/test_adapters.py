"""Freezing patterns and LoRA adapters (peft) on every family's network: the adapted network
starts as the base one, only adapters and heads train, state dicts keep vitrain's layout, and
merging gives the same function."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vitrain.errors import UserError
from vitrain.models import (
    adapters,
    create_bert,
    create_detr,
    create_gpt,
    create_mae,
    create_sam,
    create_t2t_vit,
    create_vit,
)
from vitrain.models.adapters import LoraSettings, add_lora, merge_lora, save_adapter


def vit() -> nn.Module:
    return create_vit("vit_tiny_patch16_224", img_size=16, patch_size=8, num_classes=3, embed_dim=32, depth=2,
                      num_heads=2)  # fmt: skip


def images(size: int = 16, batch: int = 2) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)),)


def tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1)),)


SAM_TINY = dict(image_size=32, patch_size=8, window_size=3, encoder_embed_dim=32, encoder_depth=2,
                encoder_num_heads=2, encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8,
                decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)  # fmt: skip

# family: (network, inputs, the output tensor to compare, adapted layers, fully trained names);
# DETR's nn.MultiheadAttention gets adapters on its in_proj and its out_proj
FAMILIES = {
    "vit": (vit, images, lambda out: out, 4, {"head"}),
    "t2t_vit": (lambda: create_t2t_vit("t2t_vit_7", img_size=32, num_classes=3, embed_dim=32, depth=1,
                                       num_heads=2, mlp_ratio=2.0), lambda: images(32), lambda out: out, 2, {"head"}),
    "mae": (lambda: create_mae("mae_vit_tiny", img_size=16, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
                               decoder_depth=1, decoder_num_heads=2),
            lambda: (*images(), 0.75, torch.rand(2, 16, generator=torch.Generator().manual_seed(2))),
            lambda out: out[1], 2, set()),
    "gpt": (lambda: create_gpt("gpt_tiny", vocab_size=50, n_layer=2, n_head=2, n_embd=32, n_positions=16), tokens,
            lambda out: out, 4, set()),
    "bert": (lambda: create_bert("bert_tiny", vocab_size=50, n_layer=2, n_head=2, n_embd=32, n_positions=16), tokens,
             lambda out: out[0], 2, set()),
    "sam": (lambda: create_sam("sam_tiny", **SAM_TINY),
            lambda: (*images(32), None, torch.tensor([[2.0, 3.0, 20.0, 25.0], [5.0, 5.0, 30.0, 12.0]])),
            lambda out: out[0], 2 + 4 * 7, set()),
    "detr": (lambda: create_detr("detr_tiny", num_classes=3, hidden_dim=32, num_heads=2, num_encoder_layers=1,
                                 num_decoder_layers=1, dim_feedforward=64, num_queries=4),
             lambda: images(64, 1), lambda out: torch.cat([out["pred_logits"], out["pred_boxes"]], -1), 3 * 2,
             {"class_embed", "bbox_embed"}),
}  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_on_every_family(family):
    """Adapters start at zero (same outputs); the state dict keeps the base keys and adds only
    lora_A/lora_B; a step trains adapters and the new head only; merging keeps the function."""
    build, inputs, output, layers, heads = FAMILIES[family]
    torch.manual_seed(0)
    net = build().eval()
    x = inputs()
    base_state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        expected = output(net(*x))
    tuner = add_lora(net, LoraSettings(r=2, alpha=4))
    with torch.no_grad():
        torch.testing.assert_close(output(net(*x)), expected, rtol=0, atol=0)
    state = net.state_dict()
    extra = sorted(set(state) - set(base_state))
    assert set(base_state) <= set(state)
    assert all(".lora_A.default." in k or ".lora_B.default." in k for k in extra), extra
    assert not any("base_layer" in k or "base_model" in k for k in state)
    assert len([k for k in extra if ".lora_A." in k]) == layers
    for k, v in base_state.items():
        assert torch.equal(state[k], v), k

    trainable = {n for n, p in adapters.named_parameters(net).items() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable if ".lora_" not in n} == heads

    net.train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    before = {n: p.detach().clone() for n, p in adapters.named_parameters(net).items()}
    output(net(*x)).float().square().mean().backward()
    opt.step()
    changed = {n for n, p in adapters.named_parameters(net).items() if not torch.equal(p, before[n])}
    assert changed <= trainable and any(".lora_B." in n for n in changed)

    net.eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.1)  # adapters far from zero
        unmerged = output(net(*x))
        merged_net = merge_lora(tuner)
        assert merged_net is net and not any(adapters.is_tuner_layer(m) for m in net.modules())
        assert set(net.state_dict()) == set(base_state)
        assert (output(net(*x)) - unmerged).abs().max() <= 1e-5
        assert (unmerged - expected).abs().max() > 1e-3  # the adapters did change the function


def test_state_dict_round_trip_into_a_freshly_adapted_network():
    torch.manual_seed(0)
    net = vit()
    add_lora(net, LoraSettings(r=2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = net.state_dict()
    other = vit()
    add_lora(other, LoraSettings(r=2))
    other.load_state_dict(state)  # strict: every key found, base weights under their own names
    x = images()[0]
    torch.testing.assert_close(other.eval()(x), net.eval()(x), rtol=0, atol=0)
    plain = vit()
    with pytest.raises(RuntimeError, match="lora_A"):  # a network without adapters refuses them
        plain.load_state_dict(state)


def test_adapter_file_loads_with_peft_onto_the_base_network(tmp_path):
    """export_adapter: peft's own PeftModel.from_pretrained rebuilds the trained network (adapters
    and the head, as modules_to_save) from the base network."""
    from peft import PeftModel

    torch.manual_seed(0)
    base = vit()
    net = vit()
    net.load_state_dict(base.state_dict())
    add_lora(net, LoraSettings(r=2, alpha=4))
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # trained adapters and head
    out = save_adapter(net, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["modules_to_save"] == ["head"]
    loaded = PeftModel.from_pretrained(base, str(out)).eval()
    x = images()[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x), rtol=0, atol=1e-6)


def test_bf16_step_and_merge_in_fp32():
    torch.manual_seed(0)
    net = vit()
    tuner = add_lora(net, LoraSettings(r=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(images()[0]).float().square().mean()
    loss.backward()
    grads = [p.grad for n, p in net.named_parameters() if ".lora_" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    net.to(torch.bfloat16)
    merged = merge_lora(tuner)
    assert all(p.dtype == torch.float32 for p in merged.parameters())


def test_lora_errors_name_the_setting_and_the_candidates():
    with pytest.raises(
        UserError, match=r"target_modules=\['qkvv'\].*blocks.\*.attn.qkv, blocks.\*.attn.proj"
    ):
        add_lora(vit(), LoraSettings(r=2, target_modules=["qkvv"]))
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1))
    with pytest.raises(UserError, match=r"Sequential has no default LoRA targets.*layers: 0, 2\."):
        add_lora(conv, LoraSettings(r=2))
    with pytest.raises(UserError, match="r must be a positive integer"):
        add_lora(vit(), LoraSettings(r=-1))
    with pytest.raises(UserError, match=r"model.lora.rank: no such setting"):
        adapters.lora_settings({"rank": 4})
