"""Any timm classifier (``model=timm``): building, local weight files, layer decay through timm's
group_matcher, and the FSDP wrap policy over every family's blocks."""

from __future__ import annotations

import pytest
import timm
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file

from tests.helpers import compose_train
from vitrain.errors import UserError
from vitrain.models import create_bert, create_detr, create_gpt, create_mae, create_timm, create_vit
from vitrain.tasks.optim import param_groups

TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
TINY_SWIN = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 1), window_size=4)


def test_cnn_ignores_img_size_and_swin_takes_it():
    convnext = create_timm("convnext_atto", img_size=32, in_chans=1, num_classes=10, **TINY_CONVNEXT)
    assert convnext(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    swin = create_timm("swin_tiny_patch4_window7_224", img_size=32, in_chans=1, num_classes=10, **TINY_SWIN)
    assert swin.patch_embed.img_size == (32, 32) and swin(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(UserError, match="model.net.name='no_such_net'"):
        create_timm("no_such_net")
    with pytest.raises(UserError, match="convnext_atto does not take"):
        create_timm("convnext_atto", depth=3)


def test_pretrained_file_loads_with_timm_and_adapts_head_and_channels(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("convnext_atto", num_classes=5, **TINY_CONVNEXT)
    path = tmp_path / "convnext.safetensors"
    save_file(source.state_dict(), path)
    net = create_timm("convnext_atto", pretrained_file=str(path), num_classes=3, in_chans=1, **TINY_CONVNEXT)
    torch.testing.assert_close(
        net.stages[2].blocks[0].conv_dw.weight, source.stages[2].blocks[0].conv_dw.weight
    )
    # one grey channel: timm sums the RGB filters of the stem
    torch.testing.assert_close(net.stem[0].weight, source.stem[0].weight.sum(dim=1, keepdim=True))
    assert net.head.fc.weight.shape == (3, 64)  # another class count: a new head
    with pytest.raises(UserError, match="no such file"):
        create_timm("convnext_atto", pretrained_file=str(tmp_path / "none.pth"))
    with pytest.raises(UserError, match="does not fit convnext_atto"):
        create_timm("convnext_atto", pretrained_file=str(path), depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


def test_layer_decay_follows_the_timm_group_matcher():
    net = create_timm("convnext_atto", num_classes=10, **TINY_CONVNEXT)
    groups = param_groups(net, layer_decay=0.5)
    scales = {g["name"]: g["lr_scale"] for g in groups}
    # stem (0), 4 stages x 1 block (1-4; convnext's matcher puts downsampling with its stage), head (5)
    assert scales["layer0"] == 0.5**5 and scales["layer5"] == 1.0
    assert [scales[f"layer{i}"] for i in range(6)] == sorted(scales[f"layer{i}"] for i in range(6))
    head = {id(p) for p in net.head.fc.parameters()}
    assert all(g["lr_scale"] == 1.0 for g in groups if head & {id(p) for p in g["params"]})
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_fsdp_wraps_a_block_of_every_family(tmp_path):
    cfg = compose_train("trainer=fsdp", output_dir=str(tmp_path))
    policy = instantiate(cfg.trainer.strategy.auto_wrap_policy)
    wrapped = tuple(policy._module_classes)
    nets = {
        "vit": create_vit(
            "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=1
        ),
        "mae": create_mae("mae_vit_tiny", img_size=16, patch_size=8),
        "convnext": create_timm("convnext_atto", **TINY_CONVNEXT),
        "swin": create_timm("swin_tiny_patch4_window7_224", img_size=32, **TINY_SWIN),
        "resnet": create_timm("resnet10t"),
        "gpt": create_gpt("gpt_tiny", 50, n_layer=1, n_embd=32, n_head=2),
        "bert": create_bert("bert_tiny", 50, n_layer=1, n_embd=32, n_head=2),
        "detr": create_detr("detr_tiny", num_classes=3, num_encoder_layers=1, num_decoder_layers=1),
    }
    for family, net in nets.items():
        assert any(isinstance(m, wrapped) for m in net.modules()), family
