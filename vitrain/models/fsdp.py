"""The block classes FSDP wraps as its units (``conf/trainer/fsdp.yaml``'s auto-wrap policy).

Each transformer or residual block of every family vitrain ships becomes one FSDP unit, so its
parameters are gathered only while that block runs: timm ViT / DeiT / MAE / T2T-ViT ``Block``,
Swin, ConvNeXt and ResNet blocks of timm classifiers (``model=timm``), GPT blocks, BERT layers
and DETR's encoder / decoder layers. A network without any of them is one unit.
"""

from __future__ import annotations

from timm.models.convnext import ConvNeXtBlock
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block as ViTBlock
from torch import nn

from vitrain.models import bert, detr, gpt


def block_classes() -> set[type[nn.Module]]:
    """The module classes to wrap (``torch.distributed.fsdp.wrap.ModuleWrapPolicy``)."""
    return {
        ViTBlock,
        SwinTransformerBlock,
        ConvNeXtBlock,
        BasicBlock,
        Bottleneck,
        gpt.Block,
        bert.Layer,
        detr.EncoderLayer,
        detr.DecoderLayer,
    }
