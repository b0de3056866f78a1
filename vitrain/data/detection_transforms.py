"""Joint image + box transforms of DETR (random flip, multi-scale resize, random crop).

Each transform takes and returns ``(image, target)``: a PIL image and a dict with ``boxes``
``(N, 4)`` float32 absolute xyxy pixels of the current image, ``labels (N,)`` int64 and
``iscrowd (N,)`` bool (entries of every key are kept in step). :class:`ToTensorNormalize` ends
every pipeline: a normalised ``(3, H, W)`` tensor and boxes as normalised cxcywh in [0, 1]
relative to that (unpadded) image, the format the network predicts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

Target = dict[str, torch.Tensor]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PER_BOX_KEYS = ("boxes", "labels", "iscrowd", "area")


def keep_boxes(target: Target, keep: torch.Tensor) -> Target:
    """``target`` with only the boxes where ``keep (N,)`` is True."""
    return {k: (v[keep] if k in PER_BOX_KEYS else v) for k, v in target.items()}


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Image.Image, target: Target) -> tuple:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class RandomHorizontalFlip:
    """Mirror image and boxes with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        if random.random() >= self.p:
            return image, target
        width = image.width
        boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
            [width, 0, width, 0]
        )
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {**target, "boxes": boxes}


def resized_shape(width: int, height: int, short: int, max_size: int | None) -> tuple[int, int]:
    """``(new_width, new_height)`` with the short side ``short`` and the long side at most
    ``max_size`` (aspect ratio kept)."""
    if max_size is not None:
        short_now, long_now = min(width, height), max(width, height)
        if long_now / short_now * short > max_size:
            short = int(round(max_size * short_now / long_now))
    if width <= height:
        return short, int(round(short * height / width))
    return int(round(short * width / height)), short


class RandomResize:
    """Resize so the short side is a random choice of ``sizes`` (long side <= ``max_size``)."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        width, height = resized_shape(image.width, image.height, random.choice(self.sizes), self.max_size)
        scale = torch.tensor([width / image.width, height / image.height] * 2)
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        return image, {**target, "boxes": target["boxes"] * scale}


class RandomSizeCrop:
    """Crop a random region with sides in ``[min_size, max_size]`` (at most the image's).

    Boxes are shifted, clipped to the crop, and dropped when nothing of them is left.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        w = random.randint(min(image.width, self.min_size), min(image.width, self.max_size))
        h = random.randint(min(image.height, self.min_size), min(image.height, self.max_size))
        left, top = random.randint(0, image.width - w), random.randint(0, image.height - h)
        boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
        boxes = torch.min(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        image = image.crop((left, top, left + w, top + h))
        return image, keep_boxes({**target, "boxes": boxes}, keep)


class RandomSelect:
    """Apply ``first`` with probability ``p``, else ``second``."""

    def __init__(self, first: Callable, second: Callable, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, image: Image.Image, target: Target) -> tuple:
        return self.first(image, target) if random.random() < self.p else self.second(image, target)


class ToTensorNormalize:
    """PIL image -> normalised float tensor ``(3, H, W)``; boxes -> normalised cxcywh in [0, 1]."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.normalize = v2.Normalize(list(mean), list(std))

    def __call__(self, image: Image.Image, target: Target) -> tuple[torch.Tensor, Target]:
        tensor = self.normalize(TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True))
        size = torch.tensor([image.width, image.height] * 2, dtype=torch.float32)
        boxes = box_convert(target["boxes"] / size, "xyxy", "cxcywh").clamp(0, 1)
        return tensor, {**target, "boxes": boxes, "size": torch.tensor([image.height, image.width])}


def detr_train_transform(
    scales: Sequence[int], max_size: int, crop_resize: Sequence[int], crop_size: Sequence[int], mean, std
) -> Compose:
    """DETR's training pipeline: flip; then either a multi-scale resize, or (half of the time)
    a resize to one of ``crop_resize``, a random crop with sides in ``crop_size`` and a
    multi-scale resize."""
    return Compose(
        [
            RandomHorizontalFlip(),
            RandomSelect(
                RandomResize(scales, max_size=max_size),
                Compose(
                    [
                        RandomResize(crop_resize),
                        RandomSizeCrop(*crop_size),
                        RandomResize(scales, max_size=max_size),
                    ]
                ),
            ),
            ToTensorNormalize(mean, std),
        ]
    )


def detr_val_transform(size: int, max_size: int, mean, std) -> Compose:
    """Resize the short side to ``size`` (long side <= ``max_size``) and normalise."""
    return Compose([RandomResize([size], max_size=max_size), ToTensorNormalize(mean, std)])
