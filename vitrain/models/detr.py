"""DETR (Carion et al. 2020, arXiv 2005.12872): a CNN backbone, an encoder-decoder transformer
and set prediction with learned object queries.

``images (B, 3, H, W)`` and a padding mask ``(B, H, W)`` (True = padding) go through

1. a timm CNN (``features_only``; ResNet-50 in the paper, any timm name works) up to its last
   used stage (``features (B, C, H/s, W/s)``), with torchvision's ``FrozenBatchNorm2d``
   (statistics and affine as buffers) and the stem + first stage frozen, as in the paper;
2. a 1x1 convolution to the transformer width ``d`` and a fixed 2-D sine position encoding of
   the unpadded pixels (:class:`SinePositionEncoding`);
3. a post-norm transformer: ``num_encoder_layers`` self-attention layers over the ``H/s * W/s``
   tokens, ``num_decoder_layers`` layers in which ``num_queries`` learned queries attend to
   themselves and to the encoded image; the positions are added to queries and keys in every
   attention, as in the paper;
4. per decoder layer, a linear class head over ``num_classes + 1`` (no-object last) and a
   3-layer MLP box head with a sigmoid (normalised cx, cy, w, h). Every layer's output but the
   last is returned as an auxiliary output for the auxiliary losses.

Variants of :func:`create_detr` (parameters with ``num_classes=91``, equal to the reference
``facebookresearch/detr``):

===========  ============================  =====  ======  =======  ==========  ===========
name         backbone (stages used)        width  layers  queries  total       trainable
===========  ============================  =====  ======  =======  ==========  ===========
detr_r50     resnet50 (4, stride 32)       256    6 + 6   100      41,524,768  41,302,368
detr_r101    resnet101 (4, stride 32)      256    6 + 6   100      60,464,672  60,242,272
detr_tiny    resnet10t (3, stride 16)      128    2 + 2   10       (CPU runs on small images)
===========  ============================  =====  ======  =======  ==========  ===========

``detr_r50`` / ``detr_r101`` name their backbones ``resnet50.tv_in1k`` / ``resnet101.tv_in1k``:
with ``pretrained_backbone`` timm loads torchvision's ImageNet weights, which DETR started from
(its default tags are the BCE-trained ``a1_in1k`` / ``a1h_in1k`` weights of another recipe).

The frozen BatchNorm statistics are buffers, so they do not count as parameters; the frozen stem
and first stage count in ``total`` only. ``detr_tiny`` is not from the paper: it trains from
scratch (no pretrained weights offline), so its BatchNorm layers are ordinary trainable ones and
nothing is frozen.
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

from vitrain.errors import UserError
from vitrain.hub import create_timm_model
from vitrain.models.registry import variant_args

__all__ = ["DETR", "DETR_VARIANTS", "SinePositionEncoding", "create_detr"]


class Backbone(nn.Module):
    """Any timm CNN as a feature extractor (``features_only=True``): ``(B, 3, H, W)`` ->
    ``(B, C, H/s, W/s)`` at stride ``s = 2 ** (num_stages + 1)``.

    The network is cut after the feature map of that stride (timm drops every later stage),
    so ResNets keep their module names (``body.conv1``, ``body.layer1`` ...) and any timm model
    with a feature pyramid works: ``resnet50``, ``resnet10t``, ``convnext_tiny``, ``efficientnet_b0``...

    Args:
        name: a timm model name.
        num_stages: stages to run (4: stride 32, DETR; 3: stride 16).
        frozen_bn: replace BatchNorm by torchvision's ``FrozenBatchNorm2d`` (statistics and affine
            as buffers; ``timm.layers.freeze_batch_norm_2d``), as DETR does with its small batches.
        freeze_stem: freeze everything up to the first stage (stride 4), as DETR does.
        pretrained: load timm's released weights for ``name`` (a tag picks them:
            ``resnet50.tv_in1k`` are torchvision's ImageNet weights, as the DETR paper) through
            the Hugging Face hub and its cache (:func:`vitrain.hub.create_timm_model`).
        weights_file: a local timm weight file (.pth / .safetensors) to load instead.
    """

    def __init__(
        self,
        name: str,
        num_stages: int = 4,
        frozen_bn: bool = True,
        freeze_stem: bool = True,
        pretrained: bool = False,
        weights_file: str | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= num_stages <= 4:
            raise UserError(f"model.net.backbone_stages={num_stages}: must be 1, 2, 3 or 4.")
        if not timm.is_model(name):
            raise UserError(f"model.net.backbone={name}: not a timm model name (see timm.list_models()).")
        kwargs: dict = {}
        if weights_file:
            if not Path(weights_file).is_file():
                raise UserError(f"model.net.backbone_weights={weights_file}: no such file.")
            kwargs = {"pretrained_cfg_overlay": {"file": str(weights_file)}}
        stride = 2 ** (num_stages + 1)
        with torch.device("meta"):  # the feature strides and modules, without building the weights
            info = timm.create_model(name, features_only=True).feature_info
        strides, modules = info.reduction(), info.module_name()
        if stride not in strides:
            raise UserError(
                f"model.net.backbone={name} has no feature map at stride {stride} (backbone_stages="
                f"{num_stages}); its strides: {strides}."
            )
        body = create_features(name, strides.index(stride), pretrained or bool(weights_file), **kwargs)
        self.body = freeze_batch_norm_2d(body) if frozen_bn else body
        self.num_stages = num_stages
        self.num_channels = body.feature_info.channels()[-1]
        self.stride = body.feature_info.reduction()[-1]
        if freeze_stem:
            first_stage = modules[strides.index(4)].replace(".", "_")  # FeatureListNet's child name
            for child_name, child in self.body.named_children():
                child.requires_grad_(False)
                if child_name == first_stage:
                    break

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)[-1]


def create_features(name: str, index: int, pretrained: bool, **kwargs) -> nn.Module:
    """timm's ``features_only`` network of ``name`` (a tag picks released weights) up to feature
    ``index``; released weights come through the hub cache (:func:`vitrain.hub.create_timm_model`)."""
    keys = {"name_key": "model.net.backbone", "pretrained_key": "model.net.pretrained_backbone"}
    try:  # ResNets: no zero-initialised last BatchNorm, which frozen would keep every block at zero
        return create_timm_model(
            name, pretrained, features_only=True, out_indices=(index,), zero_init_last=False, **keys, **kwargs
        )
    except TypeError:  # other families have no zero_init_last
        return create_timm_model(name, pretrained, features_only=True, out_indices=(index,), **keys, **kwargs)


class SinePositionEncoding(nn.Module):
    """DETR's fixed 2-D sine encoding of pixel positions, normalised to the unpadded image.

    For a padding mask ``(B, H, W)`` (True = padding) returns ``(B, 2 * num_feats, H, W)``: the
    first ``num_feats`` channels encode the row (y), the rest the column (x). Positions are the
    cumulative counts of valid pixels, scaled to ``[0, 2 pi]`` by the image's own extent, then
    ``[sin(p / T^(2k/n)), cos(p / T^(2k/n))]`` interleaved for ``k = 0 .. n/2 - 1``.
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_feats % 2:
            raise ValueError(f"SinePositionEncoding needs an even num_feats, got {num_feats}")
        self.num_feats, self.temperature = num_feats, temperature

    def forward(self, mask: Tensor) -> Tensor:
        valid = (~mask).float()
        y = valid.cumsum(1)
        x = valid.cumsum(2)
        eps, scale = 1e-6, 2 * math.pi
        y = y / (y[:, -1:, :] + eps) * scale
        x = x / (x[:, :, -1:] + eps) * scale
        k = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        freqs = self.temperature ** (2 * (k // 2) / self.num_feats)
        pos_x, pos_y = x[..., None] / freqs, y[..., None] / freqs  # (B, H, W, n)
        pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=4).flatten(3)
        pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=4).flatten(3)
        return torch.cat([pos_y, pos_x], dim=3).permute(0, 3, 1, 2)


def with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Post-norm self-attention + FFN on ``(B, L, d)`` tokens; positions added to queries/keys."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, padding: Tensor) -> Tensor:
        q = k = with_pos(src, pos)
        attn = self.self_attn(q, k, src, key_padding_mask=padding, need_weights=False)[0]
        src = self.norm1(src + self.dropout(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class DecoderLayer(nn.Module):
    """Post-norm query self-attention, cross-attention to the memory, FFN: ``(B, Q, d)``."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, padding: Tensor) -> Tensor:
        q = k = with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(
            with_pos(tgt, query_pos),
            with_pos(memory, pos),
            memory,
            key_padding_mask=padding,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


class Transformer(nn.Module):
    """DETR's encoder-decoder. ``forward`` returns every decoder layer's normed output
    ``(num_decoder_layers, B, Q, d)``."""

    def __init__(
        self, d: int, heads: int, enc_layers: int, dec_layers: int, ffn: int, dropout: float
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(EncoderLayer(d, heads, ffn, dropout) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d, heads, ffn, dropout) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, padding: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        """``src (B, L, d)``, ``padding (B, L)`` bool, ``pos (B, L, d)``, ``query_pos (B, Q, d)``."""
        memory = src
        for layer in self.encoder:
            memory = layer(memory, pos, padding)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.decoder:
            tgt = layer(tgt, memory, pos, query_pos, padding)
            outputs.append(self.decoder_norm(tgt))
        return torch.stack(outputs)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``(..., in) -> (..., out)``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DETR(nn.Module):
    """The detector. ``forward(images (B, 3, H, W), mask (B, H, W) | None)`` returns a dict:

    * ``pred_logits (B, Q, num_classes + 1)``: class logits, no-object last;
    * ``pred_boxes (B, Q, 4)``: normalised (cx, cy, w, h) in [0, 1] relative to the unpadded image;
    * ``aux_outputs``: the same pair for every decoder layer but the last (when ``aux_loss``).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        num_queries: int = 100,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_queries, self.aux_loss = num_classes, num_queries, aux_loss
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.position = SinePositionEncoding(hidden_dim // 2)
        self.transformer = Transformer(
            hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict:
        if mask is None:
            mask = images.new_zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
        features = self.backbone(images)  # (B, C, h, w)
        mask = F.interpolate(mask[:, None].float(), size=features.shape[-2:]).bool()[:, 0]  # (B, h, w)
        pos = self.position(mask).to(features.dtype).flatten(2).transpose(1, 2)  # (B, h*w, d)
        src = self.input_proj(features).flatten(2).transpose(1, 2)  # (B, h*w, d)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(images.shape[0], -1, -1)
        hidden = self.transformer(src, mask.flatten(1), pos, query_pos)  # (layers, B, Q, d)
        logits = self.class_embed(hidden)
        boxes = self.bbox_embed(hidden).sigmoid()
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1], strict=True)
            ]
        return out

    def no_weight_decay(self) -> list[str]:
        """Parameter names without weight decay: none. The reference (facebookresearch/detr
        ``main.py``: one group per learning rate, AdamW weight decay 1e-4) decays every
        parameter, ``query_embed`` included; norms and biases too with the task's
        ``decay_1d=True``."""
        return []


DETR_VARIANTS: dict[str, dict] = {
    # torchvision's ImageNet weights (timm tag tv_in1k), which DETR's backbone started from; timm's
    # default tags (a1_in1k / a1h_in1k) are the BCE-trained "ResNet strikes back" weights
    "detr_r50": dict(backbone="resnet50.tv_in1k"),
    "detr_r101": dict(backbone="resnet101.tv_in1k"),
    "detr_tiny": dict(
        backbone="resnet10t",
        backbone_stages=3,
        frozen_bn=False,
        freeze_stem=False,
        hidden_dim=128,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=512,
        dropout=0.0,
        num_queries=10,
    ),
}
_DEFAULTS = dict(
    backbone="resnet50.tv_in1k",
    backbone_stages=4,
    frozen_bn=True,
    freeze_stem=True,
    hidden_dim=256,
    num_heads=8,
    num_encoder_layers=6,
    num_decoder_layers=6,
    dim_feedforward=2048,
    dropout=0.1,
    num_queries=100,
)


def create_detr(
    name: str,
    num_classes: int,
    aux_loss: bool = True,
    pretrained_backbone: bool = False,
    backbone_weights: str | None = None,
    **overrides,
) -> DETR:
    """Build the DETR variant ``name`` (see the module docstring for the table).

    Args:
        name: ``detr_r50``, ``detr_r101`` or ``detr_tiny``.
        num_classes: object classes (the class head has ``num_classes + 1`` outputs); for COCO
            with its original ids, 91 (the largest id + 1), as the paper.
        aux_loss: return every decoder layer's predictions for the auxiliary losses.
        pretrained_backbone: start the backbone from timm's released weights for its name or
            tag (``backbone=resnet50.tv_in1k``), from the Hugging Face cache or hub.
        backbone_weights: a local timm weight file for the backbone (no download).
        **overrides: architecture arguments: ``backbone`` (any timm CNN name),
            ``backbone_stages``, ``frozen_bn``, ``freeze_stem``, ``hidden_dim``, ``num_heads``,
            ``num_encoder_layers``, ``num_decoder_layers``, ``dim_feedforward``, ``dropout``,
            ``num_queries``.
    """
    arch = variant_args("DETR", name, DETR_VARIANTS, _DEFAULTS, overrides, defaults=_DEFAULTS)
    if num_classes < 1:
        raise UserError(f"model.net.num_classes={num_classes}: must be at least 1 (data.num_classes).")
    if arch["hidden_dim"] % arch["num_heads"] or arch["hidden_dim"] % 4:
        raise UserError(
            f"model.net.hidden_dim={arch['hidden_dim']}: must be divisible by 4 and by num_heads={arch['num_heads']}."
        )
    backbone = Backbone(
        arch.pop("backbone"),
        num_stages=arch.pop("backbone_stages"),
        frozen_bn=arch.pop("frozen_bn"),
        freeze_stem=arch.pop("freeze_stem"),
        pretrained=pretrained_backbone,
        weights_file=backbone_weights,
    )
    return DETR(backbone, num_classes, aux_loss=aux_loss, **arch)
