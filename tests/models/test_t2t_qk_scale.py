"""T2T-ViT's attention scale: head_dim ** -0.5 (timm) or embed_dim ** -0.5 (the authors' weights)."""

from __future__ import annotations

import pytest
import torch

from vitrain.errors import UserError
from vitrain.models.t2t_vit import ScaledAttention, create_t2t_vit

TINY = dict(embed_dim=32, depth=1, num_heads=4, mlp_ratio=2.0, token_dim=8)


def reference_attention(attn: ScaledAttention, x: torch.Tensor, scale: float) -> torch.Tensor:
    """yitu-opensource/T2T-ViT models/transformer_block.py Attention, written out."""
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


def test_qk_scale_changes_the_output_as_the_reference():
    torch.manual_seed(0)
    head = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=3, **TINY).eval()
    authors = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=3, qk_scale="embed_dim", **TINY).eval()
    with torch.no_grad():  # sharper attention than at init, so the scale shows in the logits
        head.blocks[0].attn.qkv.weight.mul_(20)
    authors.load_state_dict(head.state_dict())
    attn_head, attn_authors = head.blocks[0].attn, authors.blocks[0].attn
    assert attn_head.scale == pytest.approx(8**-0.5) and attn_authors.scale == pytest.approx(32**-0.5)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn_authors(x), reference_attention(attn_authors, x, 32**-0.5))
        torch.testing.assert_close(attn_head(x), reference_attention(attn_head, x, 8**-0.5))
        images = torch.randn(2, 3, 32, 32)
        assert (authors(images) - head(images)).abs().max() > 1e-3


def test_authors_weight_file_gets_embed_dim_scale(tmp_path):
    source = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=3, **TINY)
    for suffix, expected in ((".pth.tar", 32**-0.5), (".pth", 32**-0.5), (".safetensors", 8**-0.5)):
        path = tmp_path / f"w{suffix}"
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
        else:
            torch.save(source.state_dict(), path)
        net = create_t2t_vit("t2t_vit_7", img_size=32, num_classes=3, pretrained_file=str(path), **TINY)
        assert net.blocks[0].attn.scale == pytest.approx(expected), suffix
    explicit = create_t2t_vit(
        "t2t_vit_7",
        img_size=32,
        num_classes=3,
        pretrained_file=str(tmp_path / "w.pth"),
        qk_scale="head_dim",
        **TINY,
    )
    assert explicit.blocks[0].attn.scale == pytest.approx(8**-0.5)
    with pytest.raises(UserError, match="model.net.qk_scale='dim'"):
        create_t2t_vit("t2t_vit_7", img_size=32, qk_scale="dim", **TINY)
