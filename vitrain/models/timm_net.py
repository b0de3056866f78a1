"""Any timm image classifier (``model=timm model.net.name=<timm name>``): ConvNeXt, Swin, DeiT,
ResNet, EfficientNet, ... through the same classification task as the ViTs.

Local weights load with timm's own loader (``pretrained=True`` and
``pretrained_cfg_overlay={"file": ...}``): it adapts the input channels, drops a classifier of
another class count and, for models with a ``checkpoint_filter_fn`` (ViT, DeiT, Swin ...),
resizes position tables to the configured image size.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from vitrain.errors import UserError


def create_timm(
    name: str, img_size: int | None = None, pretrained_file: str | None = None, **kwargs
) -> nn.Module:
    """Build timm's ``name`` with ``**kwargs`` (``num_classes``, ``in_chans``, ``drop_path_rate``,
    architecture overrides such as ``depths`` / ``dims``).

    ``img_size`` is passed to the models that take it (ViT, Swin, ...); convolutional networks
    accept any image size and do not. ``pretrained_file``: a local timm weight file
    (``.pth`` / ``.bin`` / ``.safetensors``).

    Input ``(B, in_chans, H, W)`` -> logits ``(B, num_classes)``.
    """
    if not timm.is_model(name):
        raise UserError(f"model.net.name={name!r} is not a timm model: pick one from timm.list_models().")
    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise UserError(f"model.net.pretrained_file={pretrained_file!r}: no such file.")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_file)})
    try:
        try:
            return timm.create_model(name, **({"img_size": img_size} if img_size else {}), **kwargs)
        except TypeError as err:
            if not img_size or "img_size" not in str(err):
                raise
            return timm.create_model(name, **kwargs)  # a CNN: any image size, no img_size argument
    except TypeError as err:  # an argument this architecture does not have
        raise UserError(f"model.net: {name} does not take these arguments ({err}).") from err
    except RuntimeError as err:  # timm's strict load: the file does not fit the network
        raise UserError(
            f"model.net.pretrained_file={pretrained_file!r} does not fit {name} with its overrides: "
            f"{str(err).splitlines()[0]}"
        ) from err
