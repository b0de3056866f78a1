"""Instance-mask data for promptable segmentation (SAM): shapes, COCO-format masks, SA-1B.

A sample is ``(image (3, S, S) float, target)``: the image resized so that its long side is
``image_size`` (``S``), normalised with SAM's pixel mean / std (0-255 scale) and zero-padded at
the bottom and right to ``S x S`` (the reference's ``ResizeLongestSide`` + ``preprocess``);
``target`` holds

* ``masks (N, S, S)`` bool: the instance masks in the same frame (False on the padding);
* ``boxes (N, 4)`` float32: each mask's tight box, absolute xyxy pixels of the frame
  (``x1 = last column + 1``);
* ``input_size (2,)`` int64: (height, width) of the resized image inside the frame;
* ``orig_size (2,)`` int64: (height, width) of the image as read;
* ``image_id`` int64 scalar;
* ``image_key`` str, only when the data module was asked for keys (:meth:`SegmentationDataModule.provide_image_keys`):
  :func:`image_key` of the image, which an image-embedding cache is keyed by.

At most ``max_masks_per_image`` objects are kept per image: a fresh random subset each training
step, the first ones (in annotation order) for validation. Masks left empty (after resizing)
are dropped; images left without any mask are skipped when the dataset is indexed (logged),
so every sample has ``N >= 1``. Batches are ``(images (B, 3, S, S), targets)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vitrain.data.base import IMAGE_SUFFIXES, ImageClassificationDataModule, ShardedDataModule, open_image
from vitrain.data.shapes import EXTRA_SHAPES, FILLS, SHAPES, SPLITS, render, shapes_layout
from vitrain.errors import UserError, require_int, require_positive

log = logging.getLogger(__name__)

# SAM's normalisation (segment_anything build_sam: ImageNet mean / std on the 0-255 scale)
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)

Target = dict[str, Tensor]


def resize_longest_side(size: tuple[int, int], target: int) -> tuple[int, int]:
    """``(h, w)`` scaled so that the longer side is ``target`` (rounded as the reference)."""
    h, w = size
    scale = target / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def image_key(image: Tensor) -> str:
    """A digest of a preprocessed image ``(3, S, S)`` (dtype, shape and values): equal for equal
    tensors, different for any changed pixel. 40 hex digits."""
    image = image.detach().cpu().contiguous()
    digest = hashlib.sha1(f"{image.dtype}|{tuple(image.shape)}|".encode(), usedforsecurity=False)
    digest.update(image.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes ``(N, 4)`` of non-empty ``masks (N, H, W)`` (``x1`` exclusive)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    h, w = masks.shape[1:]
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], 1).float()


class SamTransform:
    """PIL image + masks ``(N, h, w)`` bool -> the sample format of this module.

    ``flip``: mirror image and masks left-right with probability 0.5 (training).
    """

    def __init__(self, image_size: int, flip: bool = False) -> None:
        self.image_size, self.flip = image_size, flip
        self.mean = torch.tensor(SAM_MEAN).view(3, 1, 1)
        self.std = torch.tensor(SAM_STD).view(3, 1, 1)

    def __call__(self, image: Image.Image, masks: Tensor, image_id: int) -> tuple[Tensor, Target]:
        orig = (image.height, image.width)
        h, w = resize_longest_side(orig, self.image_size)
        if (h, w) != orig:
            image = image.resize((w, h), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
        if masks.shape[0] and (h, w) != orig:
            masks = F.interpolate(masks[None].float(), size=(h, w), mode="nearest")[0] > 0.5
        if self.flip and random.random() < 0.5:
            pixels, masks = pixels.flip(-1), masks.flip(-1)
        s = self.image_size
        frame = torch.zeros(3, s, s)
        frame[:, :h, :w] = (pixels - self.mean) / self.std
        full = torch.zeros(masks.shape[0], s, s, dtype=torch.bool)
        full[:, :h, :w] = masks
        keep = full.flatten(1).any(1)  # masks that vanished when resized are dropped
        full = full[keep]
        return frame, {
            "masks": full,
            "boxes": mask_boxes(full),
            "input_size": torch.tensor([h, w]),
            "orig_size": torch.tensor(orig),
            "image_id": torch.tensor(image_id),
        }


def collate_segmentation(samples: list[tuple[Tensor, Target]]) -> tuple[Tensor, list[Target]]:
    """``(images (B, 3, S, S), [target, ...])``."""
    return torch.stack([image for image, _ in samples]), [target for _, target in samples]


class MaskSubset(Dataset):
    """Caps the objects of each sample of ``dataset`` at ``limit``: a random subset when
    ``train`` (a new one at every access), else the first ``limit``. Masks covering more than
    ``max_area`` of the image are dropped first (None keeps all). With ``image_keys`` each
    target gets the ``image_key`` of its image (computed here, in the loader's workers)."""

    def __init__(
        self,
        dataset: Dataset,
        limit: int | None,
        train: bool,
        max_area: float | None = None,
        image_keys: bool = False,
    ) -> None:
        self.dataset, self.limit, self.train, self.max_area = dataset, limit, train, max_area
        self.image_keys = image_keys

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image, target = self.dataset[index]
        if self.image_keys:
            target = {**target, "image_key": image_key(image)}
        if self.max_area is not None and target["masks"].shape[0]:
            h, w = (int(v) for v in target["input_size"])
            small = target["masks"].flatten(1).sum(1) <= self.max_area * h * w
            target = {**target, "masks": target["masks"][small], "boxes": target["boxes"][small]}
        n = target["masks"].shape[0]
        if self.limit is None or n <= self.limit:
            return image, target
        keep = torch.randperm(n)[: self.limit] if self.train else torch.arange(self.limit)
        return image, {**target, "masks": target["masks"][keep], "boxes": target["boxes"][keep]}


class SegmentationDataModule(ShardedDataModule):
    """Base class: subclasses set ``train_set``, ``val_set`` and, when the data has one, the
    held-out ``test_set`` (samples of this module's format) in ``setup``; this class caps the
    objects per image (``max_masks_per_image``).

    Args:
        image_size: the images are resized on their long side to this many pixels and padded
            to a square of that side (SAM's input frame).
        max_masks_per_image: the most objects (masks) of an image in a sample: a random subset
            in training, the first ones in validation (None: all).
        hflip: random left-right flips of training images (the SAM paper uses none).
        max_mask_area: training drops masks covering more than this fraction of the image (the
            paper's light filtering of SA-1B: 0.9); None keeps all.
    """

    kind = "segmentation"
    mean, std = SAM_MEAN, SAM_STD
    collate_fn = staticmethod(collate_segmentation)

    def __init__(
        self,
        image_size: int = 1024,
        max_masks_per_image: int | None = 64,
        hflip: bool = False,
        max_mask_area: float | None = None,
        batch_size: int = 2,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        require_int("data.image_size", image_size)
        if max_masks_per_image is not None and max_masks_per_image < 1:
            raise UserError(f"data.max_masks_per_image={max_masks_per_image}: must be >= 1, or null for all.")
        self.image_size = image_size
        self.max_masks_per_image = max_masks_per_image
        self.hflip = hflip
        if max_mask_area is not None and not 0 < max_mask_area <= 1:
            raise UserError(
                f"data.max_mask_area={max_mask_area}: must be in (0, 1] (the paper: 0.9), or null."
            )
        self.max_mask_area = max_mask_area
        self.image_keys = False

    def provide_image_keys(self) -> None:
        """From now on every target carries the ``image_key`` of its image (an image-embedding
        cache asks for them before the loaders are built)."""
        self.image_keys = True

    def image_augmentations(self) -> list[str]:
        """The settings under which a training image differs from epoch to epoch (each in words),
        so that an image-embedding cache cannot serve it; validation and test images never are."""
        return ["data.hflip=true (random left-right flips)"] if self.hflip else []

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is not None and not isinstance(dataset, MaskSubset):
            dataset = MaskSubset(
                dataset,
                self.max_masks_per_image,
                train,
                self.max_mask_area if train else None,
                self.image_keys,
            )
        return super()._loader(dataset, train)

    def predict_dataloader(self) -> DataLoader:
        raise UserError(
            "mode=predict does not support segmentation data: use `python -m vitrain.segment CKPT IMAGE "
            "--point X,Y` for masks of one image, or mode=eval for the validation mIoU."
        )


# --------------------------------------------------------------------------------- shapes
def render_masks(
    seed: int,
    split: int,
    index: int,
    size: int,
    objects: tuple[int, int],
    sides: tuple[int, int],
    kinds: tuple[str, ...] = SHAPES,
    fill: str = "flat",
):
    """One shapes image with exact instance masks: ``(PIL image, masks (N, size, size) bool)``.

    The image and masks are those of :func:`vitrain.data.shapes.render` (same seed, same image).
    """
    masks: list[np.ndarray] = []
    image, _, _ = render(seed, split, index, size, objects, sides, masks=masks, kinds=kinds, fill=fill)
    stacked = np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool)
    return image, torch.from_numpy(stacked)


class ShapesMasks(Dataset):
    """``size`` shapes images of one split with their instance masks (rendered on access)."""

    def __init__(
        self, size: int, split: str, seed: int, render_size: int, objects, sides, transform,
        kinds: tuple[str, ...] = SHAPES, fill: str = "flat",
    ) -> None:  # fmt: skip
        self.size, self.split, self.seed = size, SPLITS[split], seed
        self.render_size, self.objects, self.sides, self.transform = render_size, objects, sides, transform
        self.kinds, self.fill = kinds, fill

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image, masks = render_masks(
            self.seed, self.split, index, self.render_size, self.objects, self.sides, self.kinds, self.fill
        )
        return self.transform(image, masks, index)


class ShapesMasksDataModule(SegmentationDataModule):
    """The embedded segmentation data: the ``data=shapes`` images (circles, squares, triangles
    on textured backgrounds, drawn from ``data_seed``) with exact instance masks; no files.

    Images are rendered at ``render_size`` and resized to ``image_size`` (equal by default).
    Every image has ``min_objects`` (>= 1) to ``max_objects`` shapes. The ``test_size`` test
    images (0: no test split) come from their own stream, as those of ``data=shapes``.

    ``kinds`` picks the shapes (any of circle, square, triangle, ring, cross, diamond) and
    ``fill`` how they are painted (``flat``: one colour; ``stripes``: two colours in stripes). The
    defaults are the ``data=shapes`` images; ``kinds=[ring, cross, diamond]`` with
    ``fill=stripes`` is the shifted domain of experiments/sam_adapt.md.

    Args:
        render_size: side the images are drawn at, pixels (None: ``image_size``).
        train_size, val_size: number of images of the training (``train_size``) and the
            validation split (``val_size``).
        test_size: number of images of the held-out test split (0: none).
        min_objects, max_objects: fewest and most shapes per image (at least 1).
        min_size, max_size: smallest and largest side of a shape's (square) box, as a
            fraction of the image.
        data_seed: fixes the images (independent of the training seed).
        kinds: the shapes drawn: any of circle, square, triangle, ring, cross, diamond.
        fill: how shapes are painted: ``flat`` (one colour) or ``stripes`` (two colours).
    """

    def __init__(
        self,
        image_size: int = 64,
        render_size: int | None = None,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 200,
        min_objects: int = 1,
        max_objects: int = 3,
        min_size: float = 0.2,
        max_size: float = 0.45,
        data_seed: int = 0,
        kinds: list[str] | tuple[str, ...] = SHAPES,
        fill: str = "flat",
        **kwargs,
    ) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.kinds, self.fill = shape_style(kinds, fill)
        render_size = render_size or image_size
        require_positive("data", render_size=render_size)
        self.sizes, self.objects, self.sides = shapes_layout(
            render_size, (train_size, val_size, test_size), (min_objects, max_objects), (min_size, max_size),
            fewest_objects=1, why=" (every image needs an object to prompt)",
        )  # fmt: skip
        self.render_size, self.data_seed = render_size, data_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set, self.test_set = (
            ShapesMasks(
                self.sizes[split], split, self.data_seed, self.render_size, self.objects, self.sides,
                SamTransform(self.image_size, flip=self.hflip and split == "train"), self.kinds, self.fill,
            ) if self.sizes[split] else None
            for split in ("train", "val", "test")
        )  # fmt: skip


def shape_style(kinds, fill: str) -> tuple[tuple[str, ...], str]:
    """Checked ``data.kinds`` and ``data.fill`` of :class:`ShapesMasksDataModule`."""
    known = SHAPES + EXTRA_SHAPES
    kinds = (kinds,) if isinstance(kinds, str) else tuple(str(k) for k in kinds)
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds or len(set(kinds)) < len(kinds):
        raise UserError(
            f"data.kinds={list(kinds)}: {'unknown ' + ', '.join(unknown) if unknown else 'give distinct kinds'}; "
            f"choose from {', '.join(known)}."
        )
    if fill not in FILLS:
        raise UserError(f"data.fill={fill}: choose from {', '.join(FILLS)}.")
    return kinds, fill


# ------------------------------------------------------------------------- COCO-format masks
def decode_segmentation(segm, height: int, width: int, where: str) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> ``(H, W)`` bool,
    decoded with faster-coco-eval's mask utilities (the pycocotools API)."""
    from faster_coco_eval.core import mask as mask_utils

    try:
        if isinstance(segm, list):  # polygons: one RLE per polygon, merged
            if not segm:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        elif isinstance(segm, dict) and "counts" in segm:
            rle = dict(segm)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode()
        else:
            raise ValueError(f"unknown segmentation format {type(segm).__name__}")
        return mask_utils.decode(rle).astype(bool).reshape(height, width)
    except Exception as err:
        raise UserError(
            f"{where}: cannot decode its segmentation ({err}); fix or remove the annotation."
        ) from err


def read_json(path: Path, key: str) -> dict:
    if not path.is_file():
        raise UserError(f"data.{key}={path}: no such file.")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"data.{key}={path}: not a readable JSON file ({err}).") from err


class COCOMasks(Dataset):
    """The images of a COCO instances file with their (non-crowd) instance masks.

    Crowd annotations (``iscrowd = 1``) are skipped; an annotation without ``segmentation`` is
    a :class:`UserError` naming it; images without any mask are skipped (logged).
    """

    def __init__(self, content: dict, image_dir: Path, transform, source: str) -> None:
        self.image_dir, self.transform, self.source = image_dir, transform, source
        per_image: dict[int, list[dict]] = {}
        for ann in content.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue
            if "segmentation" not in ann:
                raise UserError(
                    f"{source}: annotation {ann.get('id')} (image {ann.get('image_id')}) has no "
                    "'segmentation': data=coco_masks needs instance masks (polygons or RLE), not only boxes."
                )
            per_image.setdefault(ann["image_id"], []).append(ann)
        images = sorted(content["images"], key=lambda image: image["id"])
        self.images = [image for image in images if per_image.get(image["id"])]
        self.annotations = per_image
        if len(self.images) < len(images):
            log.info("%s: skipped %d images without masks", source, len(images) - len(self.images))
        if not self.images:
            raise UserError(f"{source}: no image has a (non-crowd) instance mask: nothing to train on.")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        info = self.images[index]
        image = open_image(self.image_dir / info["file_name"])
        h, w = image.height, image.width
        masks = [
            decode_segmentation(ann["segmentation"], h, w, f"{self.source}: annotation {ann.get('id')}")
            for ann in self.annotations[info["id"]]
        ]
        return self.transform(image, torch.from_numpy(np.stack(masks)), int(info["id"]))


class COCOMasksDataModule(SegmentationDataModule):
    """COCO-format instance masks: ``<root>/<train_ann>`` + ``<root>/<train_images>`` (and val;
    and a held-out test split when ``test_ann`` is given, its images in ``test_images``, by
    default the validation folder).

    Args:
        root: the dataset folder; the paths below are relative to it (or absolute).
        train_ann, val_ann: the COCO instances files.
        train_images, val_images: their image folders.
        test_ann, test_images: an optional held-out test split (None: none); ``test_images``
            None: the folder of ``val_images``.
    """

    def __init__(
        self,
        root: str,
        train_ann: str = "annotations/instances_train2017.json",
        val_ann: str = "annotations/instances_val2017.json",
        train_images: str = "train2017",
        val_images: str = "val2017",
        test_ann: str | None = None,
        test_images: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.paths = {"train": (train_ann, train_images), "val": (val_ann, val_images)}
        if test_ann:
            self.paths["test"] = (test_ann, test_images or val_images)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        sets = []
        for split, (ann, images) in self.paths.items():
            content = read_json(self.root / ann, f"{split}_ann")
            if "images" not in content:
                raise UserError(
                    f"data.{split}_ann={self.root / ann}: not a COCO instances file (no 'images')."
                )
            folder = self.root / images
            if not folder.is_dir():
                raise UserError(f"data.{split}_images={folder}: no such folder of images.")
            transform = SamTransform(self.image_size, flip=self.hflip and split == "train")
            sets.append(COCOMasks(content, folder, transform, f"data.{split}_ann={self.root / ann}"))
        self.train_set, self.val_set, self.test_set = (*sets, None)[:3]


# ----------------------------------------------------------------------------------- SA-1B
class SA1B(Dataset):
    """SA-1B pairs ``<name>.jpg`` + ``<name>.json`` (``{"image": {...}, "annotations": [{
    "segmentation": {"size": [h, w], "counts": RLE}, ...}]}``)."""

    def __init__(self, files: list[Path], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        path = self.files[index]
        image = open_image(path)
        meta = read_json(path.with_suffix(".json"), "root")
        masks = []
        for i, ann in enumerate(meta.get("annotations", [])):
            if "segmentation" not in ann:
                raise UserError(f"{path.with_suffix('.json')}: annotation {i} has no 'segmentation'.")
            masks.append(
                decode_segmentation(ann["segmentation"], image.height, image.width, f"{path} annotation {i}")
            )
        stacked = (
            torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros(0, image.height, image.width, dtype=torch.bool)
        )
        return self.transform(image, stacked, index)


class SA1BDataModule(SegmentationDataModule):
    """The SA-1B layout: image / JSON pairs under ``root`` (recursive). The last ``val_images``
    pairs (sorted by name) are held out for validation and the ``test_images`` before them for
    a test split (0: none); SA-1B has neither.

    Args:
        root: the folder of the extracted tar files (searched recursively).
        val_images: image / JSON pairs held out for validation (at least 1).
        test_images: pairs held out as the test split (0: none).
    """

    def __init__(self, root: str, val_images: int = 500, test_images: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if val_images < 1 or test_images < 0:
            raise UserError(
                f"data.val_images={val_images}, data.test_images={test_images}: need val_images >= 1 "
                "and test_images >= 0."
            )
        self.root, self.val_images, self.test_images = Path(root), val_images, test_images

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self.root.is_dir():
            raise UserError(
                f"data.root={self.root}: no such folder. Point it at the extracted SA-1B tar files."
            )
        images = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [p for p in images if p.with_suffix(".json").is_file()]
        if len(pairs) < len(images):
            log.info(
                "data.root=%s: skipped %d images without a JSON of masks", self.root, len(images) - len(pairs)
            )
        held_out = self.val_images + self.test_images
        if len(pairs) <= held_out:
            raise UserError(
                f"data.root={self.root} holds {len(pairs)} image/JSON pairs, not more than "
                f"data.val_images={self.val_images} + data.test_images={self.test_images}: add data "
                "or hold out fewer."
            )
        cut, val_cut = len(pairs) - held_out, len(pairs) - self.val_images
        self.train_set = SA1B(pairs[:cut], SamTransform(self.image_size, flip=self.hflip))
        self.test_set = SA1B(pairs[cut:val_cut], SamTransform(self.image_size)) if self.test_images else None
        self.val_set = SA1B(pairs[val_cut:], SamTransform(self.image_size))


# ------------------------------------------------- the shapes images as image data (for MAE)
class ShapesImages(Dataset):
    """The images of :class:`ShapesMasks` as ``(image (3, S, S), 0)`` pairs (no masks)."""

    def __init__(self, masks: ShapesMasks) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.masks[index][0], 0


class ShapesImagesDataModule(ImageClassificationDataModule):
    """The ``data=shapes_masks`` images as image data (one dummy class, labels unused), for MAE
    pretraining of an encoder that then initialises ``sam_tiny`` (``model.net.init_from``).
    Same rendering, same SAM normalisation, same frame, same ``data_seed``: the pretraining sees
    exactly the segmentation training images.

    Args:
        image_size: side of the square images, pixels (rendered at that size).
        train_size, val_size: number of images of the training (``train_size``) and the
            validation split (``val_size``); no test split.
        min_objects, max_objects: fewest and most shapes per image (at least 1).
        min_size, max_size: smallest and largest side of a shape's (square) box, as a
            fraction of the image.
        data_seed: fixes the images (independent of the training seed).
        hflip: random left-right flips of training images.
        num_classes: 1, the dummy class.
        in_chans: 3 (the images are RGB).
    """

    mean, std = tuple(m / 255 for m in SAM_MEAN), tuple(s / 255 for s in SAM_STD)

    def __init__(
        self,
        image_size: int = 64,
        train_size: int = 2000,
        val_size: int = 200,
        min_objects: int = 1,
        max_objects: int = 3,
        min_size: float = 0.2,
        max_size: float = 0.45,
        data_seed: int = 0,
        hflip: bool = True,
        num_classes: int = 1,
        in_chans: int = 3,
        **loader_kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_chans=in_chans, **loader_kwargs)
        self.masks = ShapesMasksDataModule(
            image_size=image_size, train_size=train_size, val_size=val_size, min_objects=min_objects,
            max_objects=max_objects, min_size=min_size, max_size=max_size, data_seed=data_seed, hflip=hflip,
            test_size=0,  # pretraining images only: no test split
        )  # fmt: skip
        self.classes = ["shapes"]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.masks.setup()
        self.train_set, self.val_set = ShapesImages(self.masks.train_set), ShapesImages(self.masks.val_set)
