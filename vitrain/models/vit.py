"""Vision Transformers from timm, plus loading of local pretrained weight files.

The four recipe sizes (patch 16) map to timm's registry names:

=========  ===========================  ======  =====  =====  ======
vitrain    timm name                    width   depth  heads  params (224 px, 1000 classes)
=========  ===========================  ======  =====  =====  ======
vit_ti16   vit_tiny_patch16_224         192     12     3      5.7M
vit_s16    vit_small_patch16_224        384     12     6      22.1M
vit_b16    vit_base_patch16_224         768     12     12     86.6M
vit_l16    vit_large_patch16_224        1024    24     16     304.3M
=========  ===========================  ======  =====  =====  ======
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from timm.models import load_state_dict as timm_load_state_dict
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from vitrain.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What happened when a weight file was loaded into a network."""

    path: str
    new_keys: list[str]  # in the network, not in the file (freshly initialised)
    dropped_keys: list[str]  # in the file, not used (e.g. a head with another class count)


def create_vit(name: str, pretrained_file: str | None = None, **kwargs) -> VisionTransformer:
    """Build timm's ViT ``name``; optionally load weights from a local file.

    Args:
        name: a timm VisionTransformer name, e.g. ``vit_base_patch16_224``.
        pretrained_file: a timm ``.pth`` / ``.bin`` / ``.safetensors`` state dict. Its
            ``pos_embed`` is resized to this network's image size and its head is dropped when
            the class count differs.
        **kwargs: passed to ``timm.create_model`` (img_size, num_classes, in_chans,
            drop_path_rate, global_pool, ... and any architecture override).

    Input ``(B, in_chans, img_size, img_size)`` -> logits ``(B, num_classes)``.
    """
    try:
        net = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise UserError(f"model.net.name={name!r}: {err}. Pick a name from timm.list_models().") from err
    if not isinstance(net, VisionTransformer):
        raise UserError(f"model.net.name={name!r} is not a timm VisionTransformer.")
    if pretrained_file:
        load_pretrained_file(net, pretrained_file)
    return net


def load_pretrained_file(net: VisionTransformer, path: str | Path) -> LoadReport:
    """Load a local timm ViT weight file into ``net``, adapting it to ``net``'s shape.

    Position embeddings are interpolated to ``net``'s patch grid (prefix tokens kept apart),
    the patch embedding is adapted to ``net``'s input channels, and a classifier head whose
    shape differs is dropped (left freshly initialised). Every other key must match.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"model.net.pretrained_file={str(path)!r}: no such file. Give the path of a timm "
            "ViT weight file (.pth, .bin or .safetensors)."
        )
    try:
        state = timm_load_state_dict(str(path), weights_only=True)
    except Exception as err:  # corrupt or not a state dict: name the file
        raise UserError(f"model.net.pretrained_file={str(path)!r}: cannot be read ({err}).") from err
    state = checkpoint_filter_fn(state, net)
    own = net.state_dict()
    key = "patch_embed.proj.weight"
    if key in state and state[key].shape[1] != own[key].shape[1]:
        state[key] = adapt_input_conv(own[key].shape[1], state[key])
    dropped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if any(not k.startswith("head") for k in dropped):
        bad = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}" for k in dropped]
        raise UserError(
            f"model.net.pretrained_file={str(path)!r} does not fit the configured network "
            "(check model.net.name and its size overrides): " + "; ".join(bad)
        )
    for k in dropped:
        state.pop(k)
    result = net.load_state_dict(state, strict=False)
    dropped += list(result.unexpected_keys)
    report = LoadReport(str(path), sorted(result.missing_keys), sorted(dropped))
    if any(not k.startswith(("head", "fc_norm")) for k in report.new_keys):
        raise UserError(
            f"model.net.pretrained_file={str(path)!r} lacks weights for {report.new_keys}: "
            "is it a checkpoint of a different architecture?"
        )
    log.info(
        "Loaded %s (new: %s; dropped: %s)", path, report.new_keys or "none", report.dropped_keys or "none"
    )
    return report


def count_parameters(net: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts of ``net``."""
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return total, trainable
