"""Any timm image classifier (``model=timm model.net.name=<timm name>``): ConvNeXt, Swin, DeiT,
ResNet, EfficientNet, ... through the same classification task as the ViTs.

Local weights load with timm's own loader (:func:`vitrain.hub.create_timm_model`): it adapts
the input channels, drops a classifier of another class count than the file's and, for models
with a ``checkpoint_filter_fn`` (ViT, DeiT, Swin ...), resizes position tables to the configured
image size.
"""

from __future__ import annotations

import timm
from torch import nn

from vitrain.errors import UserError
from vitrain.hub import create_timm_model


def create_timm(
    name: str,
    img_size: int | None = None,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build timm's ``name`` with ``**kwargs`` (``num_classes``, ``in_chans``, ``drop_path_rate``,
    architecture overrides such as ``depths`` / ``dims``).

    ``img_size`` is passed to the models that take it (ViT, Swin, ...); convolutional networks
    accept any image size and do not. ``pretrained``: timm's released weights for ``name`` (a tag
    too); ``pretrained_file``: a local timm weight file (``.pth`` / ``.bin`` / ``.safetensors``).

    Input ``(B, in_chans, H, W)`` -> logits ``(B, num_classes)``.
    """
    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"model.net.name={name!r} is not a timm model: pick one from timm.list_models().")
    if pretrained and pretrained_file:
        raise UserError("model.net.pretrained and model.net.pretrained_file are both set: give only one.")
    kwargs.update(pretrained=pretrained, pretrained_file=pretrained_file)
    try:
        try:
            return create_timm_model(name, **({"img_size": img_size} if img_size else {}), **kwargs)
        except TypeError as err:
            if not img_size or "img_size" not in str(err):
                raise
            return create_timm_model(name, **kwargs)  # a CNN: any image size, no img_size argument
    except TypeError as err:  # an argument this architecture does not have
        raise UserError(f"model.net: {name} does not take these arguments ({err}).") from err
