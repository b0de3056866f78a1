"""Synthetic detection data: coloured geometric shapes on textured backgrounds (no files).

Every image is drawn from ``(seed, split, index)`` alone, so the dataset is the same on every
machine and in every process, and costs no disk. Boxes are exact: each shape fills its square
bounding box edge to edge (a circle touches all four sides, a square is its box, a triangle has
its base on one side and its apex on the opposite one).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from vitrain.data.detection import DetectionDataModule
from vitrain.data.detection_transforms import fixed_size_transform
from vitrain.errors import UserError, require_positive

SHAPES = ("circle", "square", "triangle")
# further kinds for data=shapes_masks (data.kinds), each filling its square box edge to edge too
EXTRA_SHAPES = ("ring", "cross", "diamond")
# how a shape is painted: one colour, or stripes of two colours (data=shapes_masks data.fill)
FILLS = ("flat", "stripes")
SPLITS = {"train": 0, "val": 1, "test": 2}


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` float texture: a two-colour gradient, blotches and pixel noise."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    coords = np.linspace(0, 1, size)
    ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    image = a + (b - a) * ramp[..., None]
    blotches = rng.normal(0, 25, (4, 4, 3))
    image += np.kron(blotches, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size]
    image += rng.normal(0, 8, (size, size, 3))
    return image


def place_boxes(rng: np.random.Generator, count: int, size: int, min_side: int, max_side: int) -> list:
    """Up to ``count`` non-overlapping square boxes ``[x0, y0, x1, y1]`` (ints) inside the image."""
    boxes: list[list[int]] = []
    for _ in range(20 * count):
        if len(boxes) == count:
            break
        side = int(rng.integers(min_side, max_side + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
        box = [x0, y0, x0 + side, y0 + side]
        if all(box[2] <= o[0] or o[2] <= box[0] or box[3] <= o[1] or o[3] <= box[1] for o in boxes):
            boxes.append(box)
    return boxes


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[int], colour, direction: int) -> None:
    """Fill ``shape`` over exactly the pixels ``x0 .. x1 - 1`` and ``y0 .. y1 - 1`` of ``box``.

    A ring's hole is drawn with 0: draw rings into a mask canvas (mode ``L``), never an image."""
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif shape == "ring":  # a disc with a hole of half its diameter
        inset = (x1 - x0) / 4
        draw.ellipse([x0, y0, x1, y1], fill=colour)
        draw.ellipse([x0 + inset, y0 + inset, x1 - inset, y1 - inset], fill=0)
    elif shape == "cross":  # a plus sign, arms a third of the side wide
        third = (x1 - x0 + 1) / 3
        draw.rectangle([round(x0 + third), y0, round(x1 - third), y1], fill=colour)
        draw.rectangle([x0, round(y0 + third), x1, round(y1 - third)], fill=colour)
    elif shape == "diamond":  # a square on its corner
        draw.polygon([(mx, y0), (x1, my), (mx, y1), (x0, my)], fill=colour)
    else:  # a triangle pointing up, right, down or left
        points = [
            [(x0, y1), (x1, y1), (mx, y0)],
            [(x0, y0), (x0, y1), (x1, my)],
            [(x0, y0), (x1, y0), (mx, y1)],
            [(x1, y0), (x1, y1), (x0, my)],
        ][direction]
        draw.polygon(points, fill=colour)


def render(
    seed: int,
    split: int,
    index: int,
    size: int,
    objects: tuple[int, int],
    sides: tuple[int, int],
    masks: list[np.ndarray] | None = None,
    kinds: tuple[str, ...] = SHAPES,
    fill: str = "flat",
):
    """One image: ``(PIL image (size x size RGB), boxes (N, 4) float32 xyxy pixels, labels (N,))``.

    With a ``masks`` list, each shape's exact instance mask ``(size, size) bool`` is appended to
    it: the same shape drawn with the same call into its own 1-bit canvas, so it covers exactly
    the shape's pixels (shapes never overlap). ``kinds``: the shapes drawn (labels index them);
    ``fill``: one colour (``flat``) or ``stripes`` of two colours (period, angle and second colour
    random). The defaults draw the same images as before these options existed: other kinds and
    fills paint through the shape's mask and draw their extra random numbers last.
    """
    rng = np.random.default_rng([seed, split, index])
    pixels = background(rng, size)
    count = int(rng.integers(objects[0], objects[1] + 1))
    boxes = place_boxes(rng, count, size, *sides)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    labels = []
    for box in boxes:
        label = int(rng.integers(len(kinds)))
        x0, y0, x1, y1 = box
        local = pixels[y0:y1, x0:x1].reshape(-1, 3).mean(0)
        colour = contrasting_colour(rng, local)
        direction = int(rng.integers(4))
        if kinds[label] in SHAPES and fill == "flat":
            draw_shape(draw, kinds[label], box, tuple(int(c) for c in colour), direction)
            if masks is not None:
                canvas = Image.new("L", (size, size), 0)
                draw_shape(ImageDraw.Draw(canvas), kinds[label], box, 255, direction)
                masks.append(np.asarray(canvas) > 127)
        else:
            canvas = Image.new("L", (size, size), 0)
            draw_shape(ImageDraw.Draw(canvas), kinds[label], box, 255, direction)
            region = np.asarray(canvas) > 127
            painted = np.array(image)
            painted[region] = paint(rng, fill, colour, local, size)[region]
            image = Image.fromarray(painted)
            draw = ImageDraw.Draw(image)
            if masks is not None:
                masks.append(region)
        labels.append(label)
    return (
        image,
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
    )


def contrasting_colour(rng: np.random.Generator, local: np.ndarray) -> np.ndarray:
    """A random RGB colour at least 150 (L1) away from ``local``, the background under a shape."""
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - local).sum() < 150:
        colour = rng.uniform(0, 255, 3)
    return colour


def paint(
    rng: np.random.Generator, fill: str, colour: np.ndarray, local: np.ndarray, size: int
) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 paint of a shape: ``colour`` everywhere (``flat``), or
    stripes of ``colour`` and a second contrasting colour, 6-12% of the image wide per stripe
    pair, horizontal, vertical or diagonal (``stripes``)."""
    if fill == "flat":
        return np.broadcast_to(colour.astype(np.uint8), (size, size, 3))
    second = contrasting_colour(rng, local)
    period = max(2.0, rng.uniform(0.06, 0.12) * size)
    angle = rng.integers(4) * np.pi / 4
    ys, xs = np.mgrid[0:size, 0:size]
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    stripe = (np.floor(2 * phase) % 2).astype(bool)
    return np.where(stripe[..., None], second, colour).astype(np.uint8)


class ShapesDataset(Dataset):
    """``size`` images of one split, rendered on access (:func:`render`), then ``transform``."""

    def __init__(
        self, size: int, split: str, seed: int, image_size: int, objects: tuple, sides: tuple, transform
    ) -> None:
        self.size, self.split, self.seed = size, SPLITS[split], seed
        self.image_size, self.objects, self.sides = image_size, objects, sides
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, boxes, labels = render(self.seed, self.split, index, self.image_size, self.objects, self.sides)
        target = {
            "boxes": boxes,
            "labels": labels,
            "iscrowd": torch.zeros(len(labels), dtype=torch.bool),
            "orig_size": torch.tensor([self.image_size, self.image_size]),
            "image_id": torch.tensor(index),
        }
        return self.transform(image, target)


def shapes_layout(
    image_size: int,
    split_sizes: tuple[int, int, int],
    objects: tuple[int, int],
    side_fractions: tuple[float, float],
    fewest_objects: int = 0,
    why: str = "",
) -> tuple[dict[str, int], tuple[int, int], tuple[int, int]]:
    """The checked layout of shapes images rendered at ``image_size`` px: images per split
    (``{"train", "val", "test"}``; test may be 0), ``(min, max)`` shapes per image (at least
    ``fewest_objects``, ``why`` says why) and ``(min, max)`` sides of a shape's box in pixels
    (``side_fractions`` of the image). A bad value is a :class:`UserError` naming its
    ``data.*`` key."""
    (train_size, val_size, test_size), (min_objects, max_objects) = split_sizes, objects
    require_positive("data", train_size=train_size, val_size=val_size)
    if test_size < 0:
        raise UserError(f"data.test_size={test_size}: must be >= 0 (0: no test split).")
    if not fewest_objects <= min_objects <= max_objects:
        raise UserError(
            f"data.min_objects={min_objects}, data.max_objects={max_objects}: need {fewest_objects} <= min "
            f"<= max{why}."
        )
    min_size, max_size = side_fractions
    if not 0 < min_size <= max_size <= 1:
        raise UserError(f"data.min_size={min_size}, data.max_size={max_size}: need 0 < min <= max <= 1.")
    sides = (max(2, round(min_size * image_size)), max(2, round(max_size * image_size)))
    return {"train": train_size, "val": val_size, "test": test_size}, objects, sides


class ShapesDataModule(DetectionDataModule):
    """The embedded detection data: circles, squares and triangles (3 classes).

    Each image has ``min_objects`` to ``max_objects`` non-overlapping shapes of random colour,
    with sides between ``min_size`` and ``max_size`` times ``image_size``, on a random gradient
    with blotches and noise. Training images are flipped at random. ``data_seed`` fixes the
    images (independent of the training seed, so validation numbers compare across runs).
    The ``test_size`` test images (0: no test split) are drawn from their own stream, apart
    from the training and validation images.

    Args:
        num_classes: 3, the shape kinds (None: the same).
        image_size: side of the square images, pixels.
        train_size, val_size: number of images of the training (``train_size``) and the
            validation split (``val_size``).
        test_size: number of images of the held-out test split (0: none).
        min_objects, max_objects: fewest and most shapes per image.
        min_size, max_size: smallest and largest side of a shape's (square) box, as a
            fraction of ``image_size``.
        data_seed: fixes the images (independent of the training seed).
    """

    def __init__(
        self,
        num_classes: int | None = 3,
        image_size: int = 64,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 200,
        min_objects: int = 1,
        max_objects: int = 3,
        min_size: float = 0.2,
        max_size: float = 0.45,
        data_seed: int = 0,
        **loader_kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, **loader_kwargs)
        self.check_num_classes(len(SHAPES), "data=shapes")
        require_positive("data", image_size=image_size)
        self.sizes, self.objects, self.sides = shapes_layout(
            image_size, (train_size, val_size, test_size), (min_objects, max_objects), (min_size, max_size)
        )
        self.image_size, self.data_seed = image_size, data_seed
        self.classes = list(SHAPES)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        normalize = fixed_size_transform(self.mean, self.std, flip=False)
        transforms = {
            "train": fixed_size_transform(self.mean, self.std, flip=True),
            "val": normalize,
            "test": normalize,
        }
        self.train_set, self.val_set, self.test_set = (
            ShapesDataset(
                self.sizes[split],
                split,
                self.data_seed,
                self.image_size,
                self.objects,
                self.sides,
                transforms[split],
            )
            if self.sizes[split]
            else None
            for split in ("train", "val", "test")
        )
