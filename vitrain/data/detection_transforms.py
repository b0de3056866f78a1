"""Joint image + box transforms of DETR (random flip, multi-scale resize, random crop), on
``torchvision.transforms.v2``.

Every pipeline takes ``(image, target)``: a PIL image and a dict with ``boxes`` ``(N, 4)``
float32 absolute xyxy pixels, ``labels (N,)`` int64, ``iscrowd (N,)`` bool and optionally
``area (N,)`` (per-box entries are kept in step). :func:`as_tv_tensors` starts it (the boxes
become a ``tv_tensors.BoundingBoxes``, so v2's flip, resize and crop kernels move them with the
image) and :func:`network_input` ends it: a normalised ``(3, H, W)`` tensor and boxes as
normalised cxcywh in [0, 1] relative to that (unpadded) image, the format the network predicts.

Two steps are DETR's own (facebookresearch/detr ``datasets/transforms.py``), because v2 has no
equivalent that matches the reference:

* :class:`ResizeShortSide` (DETR's ``RandomResize``): v2's ``RandomShortestSize`` scales both
  sides by one ratio and truncates each, so a 1000x500 image capped at 1333 becomes 1333x666;
  DETR first rounds the short side (666) and derives the long one from it (1332);
* :class:`RandomSizeCrop`: a crop whose sides are drawn from a range (v2's ``RandomCrop`` has a
  fixed size); boxes keep any positive width and height, as DETR's ``crop`` (v2's
  ``SanitizeBoundingBoxes`` drops boxes under 1 pixel).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

Target = dict[str, torch.Tensor]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PER_BOX_KEYS = ("boxes", "labels", "iscrowd", "area")


def as_tv_tensors(image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
    """Mark ``target["boxes"]`` (absolute xyxy) as boxes of ``image`` for the v2 kernels."""
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(image.height, image.width))
    return image, {**target, "boxes": boxes}


def detr_resized_shape(width: int, height: int, short: int, max_size: int | None) -> tuple[int, int]:
    """``(new_width, new_height)`` with the short side ``short`` and the long side at most
    ``max_size``, computed as DETR's ``get_size_with_aspect_ratio`` (the long side truncated)."""
    if max_size is not None:
        short_now, long_now = min(width, height), max(width, height)
        if long_now / short_now * short > max_size:
            short = int(round(max_size * short_now / long_now))
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def random_index(n: int) -> int:
    """A uniform index below ``n`` from torch's generator (seeded per sample by the loaders)."""
    return int(torch.randint(n, ()))


class ResizeShortSide:
    """Resize so the short side is a random choice of ``sizes`` (long side <= ``max_size``)."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        short = self.sizes[random_index(len(self.sizes))]
        width, height = detr_resized_shape(image.width, image.height, short, self.max_size)
        size = [height, width]
        return TF.resize(image, size), {**target, "boxes": TF.resize(target["boxes"], size)}


class RandomSizeCrop:
    """Crop a random region with sides in ``[min_size, max_size]`` (at most the image's).

    v2's crop kernel shifts the boxes and clips them to the crop; boxes with nothing left (zero
    width or height) are dropped with their labels.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        w = self._side(image.width)
        h = self._side(image.height)
        left, top = random_index(image.width - w + 1), random_index(image.height - h + 1)
        boxes = TF.crop(target["boxes"], top, left, h, w)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {k: (v[keep] if k in PER_BOX_KEYS else v) for k, v in target.items()}
        target["boxes"] = tv_tensors.wrap(boxes[keep], like=boxes)  # indexing unwraps the tv_tensor
        return TF.crop(image, top, left, h, w), target

    def _side(self, extent: int) -> int:
        low, high = min(extent, self.min_size), min(extent, self.max_size)
        return low + random_index(high - low + 1)


def network_input(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """The last steps of every pipeline: ``(3, H, W)`` float tensor normalised by ``mean``/``std``;
    boxes as plain normalised cxcywh in [0, 1] and ``size`` ``(2,)`` = (H, W)."""

    def normalise_boxes(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        height, width = image.shape[-2:]
        scale = torch.tensor([width, height] * 2, dtype=torch.float32)
        boxes = box_convert(target["boxes"].as_subclass(torch.Tensor) / scale, "xyxy", "cxcywh").clamp(0, 1)
        return image.as_subclass(torch.Tensor), {
            **target,
            "boxes": boxes,
            "size": torch.tensor([height, width]),
        }

    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
            normalise_boxes,
        ]
    )


def fixed_size_transform(mean: Sequence[float], std: Sequence[float], flip: bool) -> v2.Compose:
    """No resizing: a random left-right flip of image and boxes when ``flip``, then
    :func:`network_input` (``data=shapes``, whose images all have one size)."""
    return v2.Compose(
        [as_tv_tensors, *([v2.RandomHorizontalFlip()] if flip else []), network_input(mean, std)]
    )


def detr_train_transform(
    scales: Sequence[int], max_size: int, crop_resize: Sequence[int], crop_size: Sequence[int], mean, std
) -> v2.Compose:
    """DETR's training pipeline: flip; then either a multi-scale resize, or (half of the time)
    a resize to one of ``crop_resize``, a random crop with sides in ``crop_size`` and a
    multi-scale resize."""
    return v2.Compose(
        [
            as_tv_tensors,
            v2.RandomHorizontalFlip(),
            v2.RandomChoice(
                [
                    ResizeShortSide(scales, max_size=max_size),
                    v2.Compose(
                        [
                            ResizeShortSide(crop_resize),
                            RandomSizeCrop(*crop_size),
                            ResizeShortSide(scales, max_size=max_size),
                        ]
                    ),
                ]
            ),
            network_input(mean, std),
        ]
    )


def detr_val_transform(size: int, max_size: int, mean, std) -> v2.Compose:
    """Resize the short side to ``size`` (long side <= ``max_size``) and normalise."""
    return v2.Compose([as_tv_tensors, ResizeShortSide([size], max_size=max_size), network_input(mean, std)])
