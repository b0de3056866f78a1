"""ViT factories: parameter counts equal timm's, local weight files load and adapt."""

from __future__ import annotations

import pytest
import timm
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file

from tests.helpers import compose_train
from vitrain.errors import UserError
from vitrain.models import create_vit
from vitrain.models.vit import count_parameters

# Published parameter counts at 224 px, 1000 classes, 3 channels.
VIT_PARAMS = {
    "vit_ti16": ("vit_tiny_patch16_224", 5_717_416),
    "vit_s16": ("vit_small_patch16_224", 22_050_664),
    "vit_b16": ("vit_base_patch16_224", 86_567_656),
    "vit_l16": ("vit_large_patch16_224", 304_326_632),
}


@pytest.mark.parametrize("option", sorted(VIT_PARAMS))
def test_vit_config_parameter_count_equals_timm(option, tmp_path):
    timm_name, published = VIT_PARAMS[option]
    cfg = compose_train(f"model={option}", "data=imagenet", output_dir=str(tmp_path))
    with torch.device("meta"):
        ours = instantiate(cfg.model.net)
        reference = timm.create_model(timm_name)
    assert count_parameters(ours) == count_parameters(reference) == (published, published)


def test_sizes_flow_from_data_config(tmp_path):
    cfg = compose_train("model=vit_ti16", "data=digits", "data.image_size=48", output_dir=str(tmp_path))
    net = instantiate(cfg.model.net)
    assert net.patch_embed.proj.in_channels == 1
    assert net.head.out_features == 10
    assert net.pos_embed.shape == (1, 1 + (48 // 16) ** 2, 192)
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 10)


def tiny(**kwargs):
    args = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, num_classes=5)
    return create_vit("vit_tiny_patch16_224", **{**args, **kwargs})


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_resizes_pos_embed(tmp_path, suffix):
    source = tiny(img_size=32)  # 2x2 patch grid
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)

    target = tiny(img_size=64, pretrained_file=str(path))  # 4x4 patch grid
    assert target.pos_embed.shape == (1, 17, 32)
    # the class-token position is kept apart; patch positions are interpolated, not copied
    torch.testing.assert_close(target.pos_embed[:, 0], source.pos_embed[:, 0])
    grid = target.pos_embed[0, 1:].reshape(4, 4, 32)
    assert not torch.allclose(grid[0, 0], grid[0, 1])
    torch.testing.assert_close(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(target.head.weight, source.head.weight)
    x = torch.randn(1, 3, 64, 64)
    assert torch.isfinite(target(x)).all()


def test_pretrained_file_with_other_head_and_channels(tmp_path, caplog):
    source = tiny(num_classes=1000, in_chans=3)
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level("INFO"):
        target = tiny(num_classes=7, in_chans=1, pretrained_file=str(path))
    # timm's loader: the 1000-class head is dropped and the new one left at its initialisation
    assert "Missing keys (head.weight, head.bias)" in caplog.text
    assert target.head.out_features == 7
    torch.testing.assert_close(target.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)
    # grey input: the RGB patch-embedding filters are summed over channels
    torch.testing.assert_close(
        target.patch_embed.proj.weight, source.patch_embed.proj.weight.sum(1, keepdim=True)
    )
    # another head and a shallower file: timm loads non-strictly, vitrain refuses the random blocks
    with pytest.raises(UserError, match=r"lacks weights for blocks\.2\..*depth"):
        tiny(num_classes=7, depth=3, pretrained_file=str(path))


def test_pretrained_file_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=f"pretrained_file='{missing}': no such file"):
        tiny(pretrained_file=str(missing))
    other = tmp_path / "wider.pth"
    torch.save(tiny(embed_dim=64).state_dict(), other)
    with pytest.raises(UserError, match="does not fit"):
        tiny(pretrained_file=str(other))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        tiny(pretrained_file=str(garbage))


def test_unknown_timm_name_is_a_user_error():
    with pytest.raises(UserError, match="model.net.name='vit_nonexistent'"):
        create_vit("vit_nonexistent")
