"""Data modules: digits split, ImageFolder trees (formats, colour modes), clear errors."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from tests.helpers import write_image
from vitrain.data import CIFARDataModule, DigitsDataModule, ImageFolderDataModule
from vitrain.errors import UserError


def test_digits_split_is_fixed_and_disjoint():
    a, b = DigitsDataModule(image_size=16), DigitsDataModule(image_size=16)
    a.setup(), b.setup()
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (1168, 359, 270)
    torch.testing.assert_close(a.val_set.images, b.val_set.images)
    train = {tuple(x.flatten().tolist()) for x in a.train_set.images}
    assert not any(tuple(x.flatten().tolist()) in train for x in a.val_set.images[:50])
    images, labels = next(iter(a.train_dataloader()))
    assert images.shape == (64, 1, 16, 16) and labels.dtype == torch.long
    assert set(a.val_set.labels.tolist()) == set(range(10))


def test_digits_other_split_seed_changes_the_split():
    a, b = DigitsDataModule(split_seed=0), DigitsDataModule(split_seed=1)
    a.setup(), b.setup()
    assert not torch.equal(a.val_set.labels, b.val_set.labels)


def test_digits_rejects_wrong_sizes():
    with pytest.raises(UserError, match="data.num_classes=5"):
        DigitsDataModule(num_classes=5)
    with pytest.raises(UserError, match="data.in_chans=3"):
        DigitsDataModule(in_chans=3)


def test_imagefolder_reads_jpeg_png_grey_rgba(image_tree):
    dm = ImageFolderDataModule(
        root=str(image_tree), num_classes=3, image_size=16, batch_size=4,
        net_data_config={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.9},
    )  # fmt: skip
    dm.setup()
    assert dm.classes == ["cat", "dog", "fox"]
    assert (len(dm.train_set), len(dm.val_set)) == (24, 12)
    assert dm.transform_args["mean"] == (0.5, 0.5, 0.5)  # from the network's data config
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape == (4, 3, 16, 16) and labels.shape == (4,)
    grey = dm.val_set[0][0]  # a grey JPEG becomes 3 equal channels
    torch.testing.assert_close(grey[0], grey[1])


def test_imagefolder_missing_root_names_path_and_layout(tmp_path):
    with pytest.raises(UserError, match=r"(?s)nowhere/train not found.*ROOT/train/<class_a>"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere"), num_classes=3)


def test_imagefolder_empty_class_folder(image_tree):
    (image_tree / "train" / "yak").mkdir()
    dm = ImageFolderDataModule(root=str(image_tree), num_classes=4, image_size=16)
    with pytest.raises(UserError, match=r"class folder .*train/yak holds no images"):
        dm.setup()


def test_imagefolder_class_mismatch_and_count(image_tree):
    write_image(image_tree / "train" / "yak" / "0.png", "RGB")
    with pytest.raises(UserError, match=r"only in train: \['yak'\]"):
        ImageFolderDataModule(root=str(image_tree), num_classes=4, image_size=16).setup()
    write_image(image_tree / "val" / "yak" / "0.png", "RGB")
    with pytest.raises(UserError, match="has 4 classes but data.num_classes=1000: set data.num_classes=4"):
        ImageFolderDataModule(root=str(image_tree), num_classes=1000, image_size=16).setup()


def test_imagefolder_corrupt_image_names_file(image_tree):
    bad = image_tree / "val" / "cat" / "0.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    dm = ImageFolderDataModule(root=str(image_tree), num_classes=3, image_size=16)
    dm.setup()
    with pytest.raises(UserError, match=f"cannot read image {bad}"):
        dm.val_set[0]


def test_cifar_offline_without_files_names_expected_path(tmp_path):
    dm = CIFARDataModule(root=str(tmp_path / "cifar"), num_classes=100, download=False)
    with pytest.raises(UserError, match=f"CIFAR-100 not found at {tmp_path}/cifar/cifar-100-python"):
        dm.setup()


def test_default_randaugment_never_crashes(image_tree):
    """RandAugment with magnitude noise reached Posterize(0 bits), which Pillow >= 11 rejects."""
    dm = ImageFolderDataModule(root=str(image_tree), num_classes=3, image_size=16)
    transform = dm._transform(train=True)
    image = Image.new("RGB", (20, 20), (120, 60, 30))
    torch.manual_seed(0)
    random.seed(0)
    for _ in range(400):
        assert transform(image).shape == (3, 16, 16)
