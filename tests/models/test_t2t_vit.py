"""T2T-ViT: parameter counts equal the paper's, token arithmetic, fixed position code, configs, training."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers import compose_train, run_train
from vitrain.errors import UserError
from vitrain.models import create_t2t_vit
from vitrain.models.t2t_vit import (
    T2T_VIT_VARIANTS,
    TokenAttention,
    TokenPerformer,
    sinusoid_position_embedding,
    t2t_grid,
)
from vitrain.models.vit import count_parameters
from vitrain.tasks.optim import param_groups

# Yuan et al. 2021, Table of T2T-ViT variants: parameters (millions) at 224 px, 1000 classes.
PAPER_PARAMS_M = {
    "t2t_vit_7": 4.3,
    "t2t_vit_10": 5.9,
    "t2t_vit_12": 6.9,
    "t2t_vit_14": 21.5,
    "t2t_vit_19": 39.2,
    "t2t_vit_24": 64.1,
    "t2t_vit_t_14": 21.5,
    "t2t_vit_t_19": 39.2,
    "t2t_vit_t_24": 64.1,
}
TINY = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def test_every_variant_has_a_paper_count():
    assert set(T2T_VIT_VARIANTS) == set(PAPER_PARAMS_M)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_parameter_count_matches_paper(name):
    with torch.device("meta"):
        net = create_t2t_vit(name)
    total, trainable = count_parameters(net)
    assert abs(total / 1e6 - PAPER_PARAMS_M[name]) < 0.1
    assert round(total / 1e6, 1) == PAPER_PARAMS_M[name]
    fixed = net.pos_embed.numel() + sum(p.numel() for n, p in net.named_parameters() if n.endswith(".w"))
    assert trainable == total - fixed
    assert net.num_classes == 1000 and net.num_patches == 196


@pytest.mark.parametrize(("size", "grid"), [(32, (2, 2)), (64, (4, 4)), (224, (14, 14)), ((64, 96), (4, 6))])
@pytest.mark.parametrize("name", ["t2t_vit_7", "t2t_vit_t_14"])
def test_token_count_and_output_shape(name, size, grid):
    assert t2t_grid(size) == grid
    net = create_t2t_vit(name, img_size=size, in_chans=1, num_classes=5, **TINY).eval()
    tokens = grid[0] * grid[1]
    assert net.num_patches == tokens
    assert net.pos_embed.shape == (1, 1 + tokens, 32)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 1, h, w)
    with torch.no_grad():
        assert net.forward_features(x).shape == (2, 1 + tokens, 32)
        out = net(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_input_of_another_size_is_refused():
    net = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=5, **TINY)
    with pytest.raises(ValueError, match="built for 4"):
        net(torch.randn(1, 3, 64, 64))


def test_position_embedding_is_fixed_sinusoid():
    net = create_t2t_vit("t2t_vit_t_14", img_size=32, num_classes=5, **TINY)
    assert not net.pos_embed.requires_grad
    torch.testing.assert_close(net.pos_embed, sinusoid_position_embedding(5, 32))
    # position 0: sin(0) = 0 on even channels, cos(0) = 1 on odd ones
    assert torch.equal(net.pos_embed[0, 0], torch.tensor([0.0, 1.0] * 16))
    trainable = [p for group in param_groups(net) for p in group["params"]]
    assert all(p is not net.pos_embed for p in trainable)
    assert "cls_token" in net.no_weight_decay()
    before = net.pos_embed.detach().clone()
    optimizer = torch.optim.AdamW(param_groups(net), lr=1e-2)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert net.pos_embed.grad is None
    assert torch.equal(net.pos_embed, before)


def test_performer_linear_attention_equals_its_quadratic_form():
    torch.manual_seed(0)
    layer = TokenPerformer(dim=12, token_dim=8, drop=0.0).eval()
    x = layer.norm1(torch.randn(2, 5, 12))
    k, q, v = layer.kqv(x).split(8, dim=-1)
    weights = layer.random_features(q) @ layer.random_features(k).transpose(1, 2)  # (B, N, N) > 0
    assert (weights > 0).all()
    expected = v + layer.proj((weights / weights.sum(-1, keepdim=True)) @ v)
    torch.testing.assert_close(layer.attention(x), expected, rtol=1e-4, atol=1e-5)
    assert layer.w.shape == (4, 8) and not layer.w.requires_grad


def test_token_attention_is_single_head_softmax_with_value_skip():
    torch.manual_seed(0)
    attn = TokenAttention(dim=12, token_dim=8).eval()
    x = torch.randn(2, 5, 12)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    expected = v + attn.proj(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(12), dim=-1) @ v)
    torch.testing.assert_close(attn(x), expected)


def test_unknown_name_and_override_are_user_errors():
    with pytest.raises(UserError, match=r"model.net.name='t2t_vit_99'.*t2t_vit_7.*t2t_vit_t_24"):
        create_t2t_vit("t2t_vit_99")
    with pytest.raises(UserError, match="embed_dimm"):
        create_t2t_vit("t2t_vit_7", embed_dimm=64)
    with pytest.raises(UserError, match="divisible"):
        create_t2t_vit("t2t_vit_7", img_size=32, embed_dim=30, num_heads=4)
    with pytest.raises(UserError, match="tokens_type"):
        create_t2t_vit("t2t_vit_7", img_size=32, tokens_type="conv", **TINY)


def test_pretrained_file_round_trip_and_errors(tmp_path):
    source = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=5, **TINY).eval()
    path = tmp_path / "t2t.pth"
    torch.save(source.state_dict(), path)
    # the position code is regenerated, so the weights also load at another image size
    target = create_t2t_vit("t2t_vit_7", img_size=64, num_classes=5, pretrained_file=str(path), **TINY).eval()
    assert target.pos_embed.shape == (1, 17, 32)
    same = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=5, pretrained_file=str(path), **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(same(x), source(x))
    torch.testing.assert_close(target.tokens_to_token.attention1.w, source.tokens_to_token.attention1.w)

    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=f"pretrained_file='{missing}': no such file"):
        create_t2t_vit("t2t_vit_7", img_size=32, pretrained_file=str(missing), **TINY)
    with pytest.raises(UserError, match=r"does not fit.*head.weight"):
        create_t2t_vit("t2t_vit_7", img_size=32, num_classes=10, pretrained_file=str(path), **TINY)
    with pytest.raises(UserError, match=r"does not fit.*missing: .*attn"):
        create_t2t_vit("t2t_vit_t_14", img_size=32, num_classes=5, pretrained_file=str(path), **TINY)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_config_composes_and_builds_paper_size(name, tmp_path):
    cfg = compose_train(f"model={name}", "data=imagenet", "data.num_classes=1000", output_dir=str(tmp_path))
    assert cfg.model.net.name == name
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    total, _ = count_parameters(net)
    assert round(total / 1e6, 1) == PAPER_PARAMS_M[name]
    assert net.num_classes == cfg.data.num_classes == 1000


@pytest.mark.slow
def test_short_training_on_digits_lowers_the_loss(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        run_dir, "model=t2t_vit_7", "+model.net.embed_dim=64", "+model.net.depth=2",
        "trainer.max_epochs=3", "trainer.limit_train_batches=6", "trainer.num_sanity_val_steps=0",
        "data.image_size=32",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with open(run_dir / "csv" / "metrics.csv") as f:
        val_loss = [float(row["val/loss"]) for row in csv.DictReader(f) if row.get("val/loss")]
    assert len(val_loss) == 3
    assert val_loss[-1] < val_loss[0] - 0.05, val_loss
