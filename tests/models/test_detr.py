"""DETR network: parameter counts of the paper models, frozen BatchNorm, positions, box ops."""

from __future__ import annotations

import pytest
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.ops import box_convert, box_iou

from vitrain.errors import UserError
from vitrain.models import create_detr
from vitrain.models.box_ops import generalized_box_iou, to_original_xyxy
from vitrain.models.detr import SinePositionEncoding
from vitrain.models.vit import count_parameters

# A DETR small enough for two CPU cores (64-px images give a 4x4 feature map at stride 16).
TINY = dict(
    hidden_dim=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=64, num_queries=5
)


def test_detr_r50_parameter_counts_equal_the_reference():
    """facebookresearch/detr, num_classes=91: 41,524,768 parameters, 41,302,368 trainable.

    Backbone: timm resnet50 without fc has 23,508,032 parameters, 53,120 of them BatchNorm
    weights/biases; frozen BatchNorm keeps those as buffers -> 23,454,912 conv weights.
    Transformer (d=256, FFN 2048): encoder layer = attention (3*256*256 + 3*256 + 256*256 + 256
    = 263,168) + FFN (256*2048 + 2048 + 2048*256 + 256 = 1,050,880) + 2 LayerNorms (1,024)
    = 1,315,072, x6 = 7,890,432; decoder layer = 2 attentions (526,336) + FFN + 3 LayerNorms
    (1,536) = 1,578,752, x6 = 9,472,512; final decoder norm 512 -> 17,363,456.
    input_proj 2048*256 + 256 = 524,544; query_embed 100*256 = 25,600; class head
    256*92 + 92 = 23,644; box MLP 2*(256*256 + 256) + 256*4 + 4 = 132,612.
    Total 23,454,912 + 17,363,456 + 524,544 + 25,600 + 23,644 + 132,612 = 41,524,768.
    Frozen: stem conv1 64*3*7*7 = 9,408 and layer1's convs 73,728 + 2*69,632 = 212,992
    -> trainable 41,524,768 - 222,400 = 41,302,368.
    """
    net = create_detr("detr_r50", num_classes=91)
    assert count_parameters(net) == (41_524_768, 41_302_368)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert net.transformer.encoder[0].linear1.out_features == 2048 and net.query_embed.num_embeddings == 100
    # R101: 33 residual blocks instead of 16 (23 in layer3); about 60.5M as in the paper
    assert count_parameters(create_detr("detr_r101", num_classes=91))[0] == 60_464_672


def test_frozen_batchnorm_equals_eval_batchnorm_and_holds_buffers():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        (
            bn.weight.uniform_(0.5, 2),
            bn.bias.normal_(),
            bn.running_mean.normal_(),
            bn.running_var.uniform_(0.5, 2),
        )
    frozen = freeze_batch_norm_2d(nn.Sequential(bn))[0]
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(frozen(x), bn.eval()(x))
    assert list(frozen.parameters()) == []
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


def test_stem_and_first_stage_are_frozen():
    net = create_detr("detr_tiny", num_classes=3, frozen_bn=True, freeze_stem=True, **TINY)
    trainable = {n for n, p in net.backbone.named_parameters() if p.requires_grad}
    frozen = {n for n, p in net.backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("body.conv1", "body.layer1")) for n in frozen)
    assert trainable and all(n.startswith(("body.layer2", "body.layer3")) for n in trainable)
    # detr_tiny trains from scratch: ordinary BatchNorm, nothing frozen
    scratch = create_detr("detr_tiny", num_classes=3, **TINY)
    assert count_parameters(scratch)[0] == count_parameters(scratch)[1]
    assert any(isinstance(m, nn.BatchNorm2d) for m in scratch.modules())


def test_any_timm_cnn_is_a_backbone():
    """``model.net.backbone=<timm name>``: a tiny ConvNeXt (LayerNorm, no BatchNorm) at stride 16."""
    torch.manual_seed(0)
    net = create_detr("detr_tiny", num_classes=3, backbone="convnext_atto", freeze_stem=True, **TINY).eval()
    assert net.backbone.stride == 16 and net.backbone.num_channels == 160
    assert not any(
        n.startswith("body.stages_3") for n, _ in net.backbone.named_parameters()
    )  # cut at stride 16
    frozen = {n.split(".")[1] for n, p in net.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"stem_0", "stem_1", "stages_0"}
    out = net(torch.randn(1, 3, 64, 64))
    assert out["pred_boxes"].shape == (1, 5, 4) and torch.isfinite(out["pred_logits"]).all()
    with pytest.raises(UserError, match="model.net.backbone=no_such_cnn"):
        create_detr("detr_tiny", num_classes=3, backbone="no_such_cnn")


def test_forward_shapes_and_auxiliary_outputs():
    torch.manual_seed(0)
    net = create_detr("detr_tiny", num_classes=3, **TINY).eval()
    images = torch.randn(2, 3, 64, 80)
    mask = torch.zeros(2, 64, 80, dtype=torch.bool)
    mask[1, :, 48:] = True  # the second image is 48 px wide, padded to 80
    out = net(images, mask)
    assert out["pred_logits"].shape == (2, 5, 4) and out["pred_boxes"].shape == (2, 5, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_boxes"].shape == (2, 5, 4)
    assert "aux_outputs" not in create_detr("detr_tiny", num_classes=3, aux_loss=False, **TINY)(images)


def test_sine_positions_are_normalised_to_the_unpadded_image():
    encode = SinePositionEncoding(num_feats=8)
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[1, :, 3:] = True  # 3 of 6 columns valid
    pos = encode(mask)
    assert pos.shape == (2, 16, 4, 6)
    # the last valid column has the same (full-width) x encoding in both images
    torch.testing.assert_close(pos[1, 8:, :, 2], pos[0, 8:, :, 5])
    torch.testing.assert_close(pos[1, :8, :, :3], pos[0, :8, :, :3])  # rows: the same in valid columns


def test_create_detr_rejects_bad_arguments():
    with pytest.raises(UserError, match="model.net.name='detr_x'.*detr_r50"):
        create_detr("detr_x", num_classes=3)
    with pytest.raises(UserError, match="unknown DETR argument.*depth"):
        create_detr("detr_tiny", num_classes=3, depth=2)
    with pytest.raises(UserError, match="model.net.backbone_weights=/no/file"):
        create_detr("detr_tiny", num_classes=3, backbone_weights="/no/file")


# ---------------------------------------------------------------- box operations
def test_box_conversions_round_trip():
    torch.manual_seed(0)
    cxcywh = torch.rand(10, 4)
    torch.testing.assert_close(box_convert(box_convert(cxcywh, "cxcywh", "xyxy"), "xyxy", "cxcywh"), cxcywh)
    xyxy = box_convert(cxcywh, "cxcywh", "xyxy")
    torch.testing.assert_close(box_convert(box_convert(xyxy, "xyxy", "cxcywh"), "cxcywh", "xyxy"), xyxy)
    assert box_convert(torch.tensor([[10.0, 20, 5, 8]]), "xywh", "xyxy").tolist() == [[10, 20, 15, 28]]
    # normalised cxcywh of a 100 x 200 (h x w) image -> its pixels
    original = to_original_xyxy(torch.tensor([[0.5, 0.5, 0.5, 0.2]]), torch.tensor([100, 200]))
    torch.testing.assert_close(original, torch.tensor([[50.0, 40.0, 150.0, 60.0]]))


def test_iou_and_generalized_iou():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [4, 0, 6, 2]])
    iou = box_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([[1 / 7, 1.0, 0.0]]))
    # hulls: 3x3 = 9 (union 7), 2x2, 6x2 = 12 (union 8)
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, 1.0, -4 / 12]]))
    with pytest.raises(ValueError, match="x1 >= x0"):
        generalized_box_iou(torch.tensor([[float("nan"), 0, 1, 1]]), a)
