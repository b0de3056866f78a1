"""ImageNet-style folders ``ROOT/{train,val[,test]}/<class>/<image>`` with timm's transforms."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from timm.data import create_transform
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from vitrain.data.base import ImageClassificationDataModule, open_image
from vitrain.errors import UserError, require_choice, require_int

LAYOUT = """expected layout:
  ROOT/train/<class_a>/<image>.jpg
  ROOT/train/<class_b>/...
  ROOT/val/<class_a>/<image>.jpg
  ROOT/val/<class_b>/...
  ROOT/test/<class_a>/<image>.jpg   (optional held-out test split, data.test_split)"""
# how random erasing fills a region (timm RandomErasing): per-pixel normal noise, one random
# colour per region, or zeros
RE_MODES = ("pixel", "rand", "const")


def load_rgb(path: str) -> Image.Image:
    """Open an image file as RGB (grey, palette and RGBA images are converted)."""
    return open_image(path, "RGB")


def _has_image(folder: Path) -> bool:
    return any(p.suffix.lower() in IMG_EXTENSIONS for p in folder.rglob("*"))


class ImageFolderDataModule(ImageClassificationDataModule):
    """Any ImageFolder tree; class folders of ``train``, ``val`` (and ``test``) must agree.

    Transforms are timm's ``create_transform``: training uses RandomResizedCrop, flip,
    RandAugment (or, without it, colour jitter) and random erasing; evaluation resizes by
    ``crop_pct`` and centre-crops. ``mean``, ``std``, ``interpolation`` and ``crop_pct`` default
    to the network's own data config (timm ``resolve_model_data_config``), passed in as
    ``net_data_config`` by the orchestration layer.

    Args:
        root: the folder that holds ``train``, ``val`` (and the test split's folder).
        num_classes: None takes the class count from the class folders of ``train``; an
            explicit value must match them.
        image_size: side of the square crops the network gets, pixels.
        in_chans: 3 (the images are loaded as RGB).
        auto_augment: timm's RandAugment policy of the training images (None: off).
        re_prob: probability of random erasing for each training image.
        re_mode: how an erased region is filled: ``pixel`` per-pixel normal noise (as DeiT, MAE
            fine-tuning and T2T-ViT), ``rand`` one random colour per region, ``const`` zeros
            (timm's default).
        re_count: the most regions erased in one image.
        crop_pct: evaluation: resize to ``image_size / crop_pct``, then centre-crop ``image_size``
            (None: the network's).
        interpolation: the resize interpolation, ``bicubic``, ``bilinear``, ... (None: the
            network's).
        mean, std: per-channel normalisation (None: the network's).
        scale: RandomResizedCrop area range (None: timm's ``(0.08, 1)``).
        color_jitter: colour jitter strength, used only without ``auto_augment`` (None: off).
        test_split: the folder beside ``train`` and ``val`` that holds the held-out test images
            (used when it exists; None: no test split).
    """

    # network sizes the data decides when the config leaves them null (see model_sizes)
    model_size_keys = ("num_classes",)

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        image_size: int = 224,
        in_chans: int = 3,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1-mmax9",
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        scale: tuple[float, float] | None = None,
        color_jitter: float | None = 0.4,
        test_split: str | None = "test",
        **loader_kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_chans=in_chans, **loader_kwargs)
        if in_chans != 3:
            raise UserError(f"data.in_chans={in_chans}: images are loaded as RGB, set data.in_chans=3.")
        self.root = Path(root)
        self.split_dirs = {split: self.root / split for split in ("train", "val")}
        self.check_root()
        if test_split and (self.root / test_split).is_dir():
            self.split_dirs["test"] = self.root / test_split
        defaults = self.net_data_config
        self.transform_args = dict(
            input_size=(3, image_size, image_size),
            mean=tuple(mean or defaults.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(std or defaults.get("std", (0.229, 0.224, 0.225))),
            interpolation=interpolation or defaults.get("interpolation", "bicubic"),
            crop_pct=crop_pct or defaults.get("crop_pct", 0.875),
        )
        self.auto_augment = auto_augment
        self.re_prob = re_prob
        require_choice("data.re_mode", re_mode, RE_MODES)
        require_int("data.re_count", re_count, hint="the sources use 1")
        self.re_mode, self.re_count = re_mode, re_count
        self.scale = tuple(scale) if scale is not None else None
        self.color_jitter = color_jitter

    def check_root(self) -> None:
        """Fail unless ``root`` has the ``train`` and ``val`` folders."""
        for split, folder in self.split_dirs.items():
            if not folder.is_dir():
                raise UserError(
                    f"data.root={self.root}: folder {folder} not found ({split} split).\n{LAYOUT}"
                )

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean the images are normalised with."""
        return self.transform_args["mean"]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation the images are normalised with."""
        return self.transform_args["std"]

    def _transform(self, train: bool):
        return create_transform(
            **self.transform_args,
            is_training=train,
            auto_augment=self.auto_augment if train else None,
            re_prob=self.re_prob if train else 0.0,
            re_mode=self.re_mode,
            re_count=self.re_count,
            **(dict(scale=self.scale, color_jitter=self.color_jitter) if train else {}),
        )

    def eval_transform(self):
        return self._transform(train=False)

    def _dataset(self, split: str) -> ImageFolder:
        folder = self.split_dirs[split]
        transform = self._transform(train=split == "train")
        try:
            return ImageFolder(str(folder), transform=transform, loader=load_rgb)
        except FileNotFoundError as err:  # no class folders, or a class folder without images
            empty = [d for d in sorted(folder.iterdir()) if d.is_dir() and not _has_image(d)]
            what = f"class folder {empty[0]} holds no images" if empty else str(err)
            raise UserError(f"data.root={self.root}: {what}. Add images or remove it.\n{LAYOUT}") from err

    def class_folders(self) -> list[str]:
        """The class folder names of the training split (sorted, as ImageFolder orders them)."""
        return sorted(d.name for d in self.split_dirs["train"].iterdir() if d.is_dir())

    def model_sizes(self) -> dict[str, int]:
        """Sizes the network takes from the data: ``{"num_classes": class folders of train}``,
        checked against an explicit ``data.num_classes`` (a cheap listing, before anything is built)."""
        classes = self.class_folders()
        if not classes:
            raise UserError(
                f"data.root={self.root}: {self.split_dirs['train']} has no class folders.\n{LAYOUT}"
            )
        self.check_num_classes(len(classes), f"data.root={self.root} ({self.split_dirs['train']})")
        return {"num_classes": len(classes)}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        sets = {split: self._dataset(split) for split in self.split_dirs}
        train_classes = sets["train"].classes
        for split, dataset in sets.items():
            if dataset.classes != train_classes:
                only_train = sorted(set(train_classes) - set(dataset.classes))
                only_other = sorted(set(dataset.classes) - set(train_classes))
                raise UserError(
                    f"data.root={self.root}: train and {split} class folders differ (only in train: "
                    f"{only_train}; only in {split}: {only_other})."
                )
        self.check_num_classes(len(train_classes), f"data.root={self.root}")
        self.train_set, self.val_set, self.classes = sets["train"], sets["val"], train_classes
        self.test_set = sets.get("test")
