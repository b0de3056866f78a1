"""MAE fine-tuning details of create_vit: head init std and the data statistics after init_from."""

from __future__ import annotations

import pytest
import torch
from timm.data import resolve_model_data_config

from vitrain.errors import UserError
from vitrain.models.vit import create_vit

ARGS = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)


def test_head_init_std_reinitialises_the_head():
    torch.manual_seed(0)
    default = create_vit("vit_base_patch16_224", **ARGS)
    assert default.head.weight.std().item() > 1e-2  # timm: trunc normal std 0.02
    torch.manual_seed(0)
    net = create_vit("vit_base_patch16_224", head_init_std=2e-5, **ARGS)
    # facebookresearch/mae main_finetune.py: trunc_normal_(model.head.weight, std=2e-5)
    assert net.head.weight.std().item() == pytest.approx(2e-5, rel=0.2)
    assert net.head.weight.abs().max().item() < 1e-3 and not net.head.bias.any()
    # google-research/vision_transformer models_vit.py: head kernel and bias zeros
    zero = create_vit("vit_base_patch16_224", head_init_std=0.0, **ARGS)
    assert not zero.head.weight.any() and not zero.head.bias.any()
    with pytest.raises(UserError, match="head_init_std=-1"):
        create_vit("vit_base_patch16_224", head_init_std=-1, **ARGS)


def test_init_from_sets_the_pretraining_statistics(tmp_path):
    source = create_vit("vit_base_patch16_224", **ARGS)
    path = tmp_path / "encoder.pth"
    torch.save(source.state_dict(), path)
    plain = resolve_model_data_config(create_vit("vit_base_patch16_224", **ARGS))
    assert plain["mean"] == (0.5, 0.5, 0.5) and plain["crop_pct"] == 0.9  # timm's augreg tag
    net = create_vit("vit_base_patch16_224", init_from=str(path), head_init_std=2e-5, **ARGS)
    config = resolve_model_data_config(net)
    # what MAE pretraining saw and its fine-tune / linear probe evaluate with (resize 256, crop 224)
    assert config["mean"] == (0.485, 0.456, 0.406) and config["std"] == (0.229, 0.224, 0.225)
    assert config["crop_pct"] == 0.875 and config["interpolation"] == "bicubic"
    torch.testing.assert_close(net.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize(("source_chans", "target_chans"), [(1, 3), (3, 1)])
def test_init_from_adapts_the_patch_embedding_to_the_input_channels(tmp_path, source_chans, target_chans):
    """A grey encoder into an RGB classifier (and back): the same features on grey images given
    as equal channels (timm's adapt_input_conv with the file's channel count as its base)."""
    torch.manual_seed(0)
    source = create_vit("vit_base_patch16_224", in_chans=source_chans, **ARGS).eval()
    path = tmp_path / "encoder.pth"
    torch.save(source.state_dict(), path)
    net = create_vit("vit_base_patch16_224", in_chans=target_chans, init_from=str(path), **ARGS).eval()
    grey = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            net.forward_features(grey.expand(-1, target_chans, -1, -1)),
            source.forward_features(grey.expand(-1, source_chans, -1, -1)),
        )
