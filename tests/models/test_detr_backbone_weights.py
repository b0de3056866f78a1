"""DETR's backbones are torchvision's ImageNet ResNets (timm tag tv_in1k), as facebookresearch/detr."""

from __future__ import annotations

import pytest

from vitrain.models.detr import DETR_VARIANTS, Backbone


@pytest.mark.parametrize(("variant", "name"), [("detr_r50", "resnet50"), ("detr_r101", "resnet101")])
def test_paper_variants_use_torchvision_weights(variant, name):
    assert DETR_VARIANTS[variant]["backbone"] == f"{name}.tv_in1k"


def test_backbone_tag_reaches_timm():
    backbone = Backbone("resnet18.tv_in1k", num_stages=2)
    # what timm would download with pretrained=True: torchvision's weights, not the a1 recipe's
    assert backbone.body.pretrained_cfg["tag"] == "tv_in1k"
    assert backbone.num_channels == 128
