"""COCO-format detection data: ``annotations/instances_*.json`` plus folders of images.

Any dataset in the COCO ``instances`` format works (``images``, ``annotations`` with
``bbox = [x, y, width, height]`` in pixels, ``categories``). Category ids are mapped to labels
either contiguously (sorted ids -> 0 .. K-1, ``num_classes = K``) or kept as they are (the DETR
paper on COCO: ``num_classes`` = largest id + 1 = 91). Boxes are clipped to the image and
boxes left without area are dropped; crowd boxes (``iscrowd = 1``) are kept, flagged, and only
the COCO evaluation sees them. Images without annotations are kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from vitrain.data.base import open_image
from vitrain.data.detection import DetectionDataModule
from vitrain.data.detection_transforms import detr_train_transform, detr_val_transform
from vitrain.errors import UserError

DETR_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


def read_annotations(path: Path, key: str) -> dict:
    """The parsed annotation file at ``path`` (config key ``key``), checked for the COCO keys."""
    if not path.is_file():
        raise UserError(
            f"data.{key}={path}: no such annotation file. Point data.root at a COCO-format dataset "
            f"(annotations/instances_*.json + image folders) or set data.{key}."
        )
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"data.{key}={path}: not a readable JSON file ({err}).") from err
    missing = [k for k in ("images", "annotations", "categories") if k not in content]
    if not isinstance(content, dict) or missing:
        raise UserError(f"data.{key}={path}: not a COCO instances file (missing {', '.join(missing)}).")
    if not content["images"]:
        raise UserError(f"data.{key}={path} lists no images: the dataset is empty.")
    return content


def category_labels(categories: list[dict], contiguous: bool) -> tuple[dict[int, int], list[str]]:
    """``({category id: label}, class names by label)`` for the ``categories`` of a file."""
    ids = sorted(int(c["id"]) for c in categories)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    if contiguous:
        return {cid: i for i, cid in enumerate(ids)}, [names[cid] for cid in ids]
    size = max(ids) + 1 if ids else 0
    return {cid: cid for cid in ids}, [names.get(i, "N/A") for i in range(size)]


class COCODetection(Dataset):
    """The images of one annotation file, with their boxes, through ``transform``.

    ``transform(image, target)`` gets the PIL image and absolute xyxy ``boxes`` (clipped),
    ``labels``, ``iscrowd``, ``orig_size`` and ``image_id`` (see ``vitrain.data.detection``).
    """

    def __init__(
        self, content: dict, image_dir: Path, labels: dict[int, int], transform, source: str
    ) -> None:
        self.image_dir, self.transform = image_dir, transform
        self.images = sorted(content["images"], key=lambda image: image["id"])
        self.annotations: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for ann in content["annotations"]:
            if ann["category_id"] not in labels:
                raise UserError(
                    f"{source}: annotation {ann.get('id')} has category_id={ann['category_id']}, which is "
                    "not in the categories of the training annotation file: add it there or remove it."
                )
            if ann["image_id"] not in self.annotations:
                raise UserError(
                    f"{source}: annotation {ann.get('id')} refers to image_id={ann['image_id']}, not listed."
                )
            self.annotations[ann["image_id"]].append(ann)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        info = self.images[index]
        image = open_image(self.image_dir / info["file_name"])
        anns = self.annotations[info["id"]]
        boxes = box_convert(
            torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy"
        )
        size = torch.tensor([image.width, image.height] * 2, dtype=torch.float32)
        boxes = torch.min(boxes.clamp(min=0), size)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.labels[a["category_id"]] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool),
            # the annotation's area in original pixels (the segment's for COCO): what the official
            # evaluator sorts into small / medium / large; the box's when the file has none
            "area": torch.tensor(
                [float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in anns], dtype=torch.float32
            ),
        }
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {k: v[keep] for k, v in target.items()}
        target["orig_size"] = torch.tensor([image.height, image.width])
        target["image_id"] = torch.tensor(info["id"])
        return self.transform(image, target)


class COCODataModule(DetectionDataModule):
    """A COCO-format dataset under ``root`` with DETR's augmentation.

    Training: random horizontal flip, then either a resize of the short side to one of
    ``scales`` (long side at most ``max_size``) or, half of the time, a resize to one of
    ``crop_resize``, a random crop with sides in ``crop_size`` and the multi-scale resize.
    Validation: short side ``val_size`` (long side at most ``max_size``). Batches are padded
    with pixel masks (``vitrain.data.detection.collate_detection``).

    Args:
        root: the dataset folder; the four paths below are relative to it (or absolute).
        train_ann, val_ann: the annotation files.
        train_images, val_images: the image folders (``file_name`` is relative to them).
        contiguous_ids: map category ids to 0 .. K-1 (True) or keep them (False, DETR on COCO).
        num_classes: K, or the largest id + 1 without ``contiguous_ids``; None takes it from the
            categories of the training file, an explicit value is checked against them.
        test_ann, test_images: an optional held-out test split in the same format (its
            categories must be those of the training file); ``test_images`` None: the folder
            of ``val_images``.
        scales: short sides of the multi-scale resize, pixels (one drawn per image).
        max_size: the longest long side after the multi-scale and the validation resize.
        crop_resize: short sides of the resize before the random crop (one drawn per image).
        crop_size: ``[min, max]`` side of the random crop, pixels.
        val_size: short side of the validation and test images.
    """

    # network sizes the data decides when the config leaves them null (see model_sizes)
    model_size_keys = ("num_classes",)

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        train_ann: str = "annotations/instances_train2017.json",
        val_ann: str = "annotations/instances_val2017.json",
        train_images: str = "train2017",
        val_images: str = "val2017",
        contiguous_ids: bool = True,
        scales: Sequence[int] = DETR_SCALES,
        max_size: int = 1333,
        crop_resize: Sequence[int] = (400, 500, 600),
        crop_size: Sequence[int] = (384, 600),
        val_size: int = 800,
        test_ann: str | None = None,
        test_images: str | None = None,
        **loader_kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, **loader_kwargs)
        self.root = Path(root)
        if not self.root.is_dir():  # fail before training starts
            raise UserError(f"data.root={self.root}: no such folder. Point it at a COCO-format dataset.")
        self.paths = {
            "train_ann": train_ann,
            "val_ann": val_ann,
            "train_images": train_images,
            "val_images": val_images,
            "test_ann": test_ann,
            "test_images": test_images or val_images,
        }
        self._contents: dict[str, dict] = {}  # parsed annotation files, read once
        self.contiguous_ids = contiguous_ids
        if len(crop_size) != 2 or not 0 < crop_size[0] <= crop_size[1]:
            raise UserError(f"data.crop_size={list(crop_size)}: give [min, max] with 0 < min <= max.")
        self.train_transform = detr_train_transform(
            scales, max_size, crop_resize, crop_size, self.mean, self.std
        )
        self.val_transform = detr_val_transform(val_size, max_size, self.mean, self.std)

    def path(self, key: str) -> Path:
        """The file or folder of config key ``key``, relative to ``root`` unless absolute."""
        return self.root / self.paths[key]

    def image_dir(self, key: str) -> Path:
        folder = self.path(key)
        if not folder.is_dir():
            raise UserError(
                f"data.{key}={folder}: no such image folder. Set data.{key} (relative to data.root)."
            )
        return folder

    def annotations(self, key: str) -> dict:
        """The parsed annotation file of config key ``key`` (read once, then kept)."""
        if key not in self._contents:
            self._contents[key] = read_annotations(self.path(key), key)
        return self._contents[key]

    def _labels(self, content: dict, source: str) -> dict[int, int]:
        """Category ids -> labels of ``content``; sets ``classes`` and checks ``num_classes``."""
        labels, self.classes = category_labels(content["categories"], self.contiguous_ids)
        if not labels:
            raise UserError(f"{source} lists no categories.")
        hint = "" if self.contiguous_ids else " (the largest category id + 1, data.contiguous_ids=false)"
        self.check_num_classes(len(self.classes), f"{source}{hint}")
        return labels

    def model_sizes(self) -> dict[str, int]:
        """``{"num_classes": ...}`` from the categories of the training annotation file (or of
        the validation file when the training file is absent, e.g. evaluation only)."""
        key = "train_ann" if self.path("train_ann").is_file() else "val_ann"
        self._labels(self.annotations(key), f"data.{key}={self.path(key)}")
        return {"num_classes": self.num_classes}

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        train = self.annotations("train_ann") if stage in (None, "fit") else None
        val = self.annotations("val_ann")
        key = "train_ann" if train is not None else "val_ann"
        labels = self._labels(train or val, f"data.{key}={self.path(key)}")
        if train is not None:
            self.train_set = COCODetection(
                train,
                self.image_dir("train_images"),
                labels,
                self.train_transform,
                f"data.train_ann={self.path('train_ann')}",
            )
        self.val_set = COCODetection(
            val,
            self.image_dir("val_images"),
            labels,
            self.val_transform,
            f"data.val_ann={self.path('val_ann')}",
        )
        if self.paths["test_ann"]:
            self.test_set = COCODetection(
                self.annotations("test_ann"),
                self.image_dir("test_images"),
                labels,
                self.val_transform,
                f"data.test_ann={self.path('test_ann')}",
            )
