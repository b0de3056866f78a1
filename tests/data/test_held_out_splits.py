"""Held-out test splits of every DataModule, and class counts taken from the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.helpers import compose_train, write_image
from vitrain.data import COCODataModule, DigitsDataModule, ImageFolderDataModule, ShapesDataModule
from vitrain.data.text import TextDataModule
from vitrain.errors import UserError
from vitrain.run.build import data_before_task


def rows(dataset) -> set[bytes]:
    """Each image of an in-memory dataset as bytes (to compare splits by content)."""
    return {image.numpy().tobytes() for image in dataset.images}


def test_digits_test_split_is_fixed_and_disjoint_from_validation():
    data = DigitsDataModule(image_size=8, batch_size=32)
    data.setup()
    sizes = [len(data.train_set), len(data.val_set), len(data.test_set)]
    assert sizes == [1168, 359, 270] and sum(sizes) == 1797
    train, val, test = rows(data.train_set), rows(data.val_set), rows(data.test_set)
    assert not test & val and not test & train
    again = DigitsDataModule(image_size=8, seed=7)  # the training seed does not move the split
    again.setup()
    assert torch.equal(again.test_set.labels, data.test_set.labels)
    images, labels = next(iter(data.test_dataloader()))
    assert images.shape == (32, 1, 8, 8) and labels.shape == (32,)


def test_no_test_split_is_a_clear_error_when_asked_for():
    data = DigitsDataModule(image_size=8, test_fraction=0)
    data.setup()
    assert not data.has_test_split and len(data.train_set) == 1438
    with pytest.raises(UserError, match="has no test split.*data.test_fraction"):
        data.test_dataloader()
    with pytest.raises(UserError, match="data.test_fraction=0.9"):
        DigitsDataModule(test_fraction=0.9)


def test_shapes_test_images_are_their_own():
    data = ShapesDataModule(image_size=32, train_size=4, val_size=3, test_size=2)
    data.setup()
    assert len(data.test_set) == 2
    assert not torch.equal(data.test_set[0][0], data.val_set[0][0])
    none = ShapesDataModule(image_size=32, train_size=4, val_size=3, test_size=0)
    none.setup()
    assert not none.has_test_split


def test_imagefolder_test_folder_and_class_count_from_the_folders(image_tree):
    for c, name in enumerate(("cat", "dog", "fox")):
        write_image(image_tree / "test" / name / "0.png", "RGB", seed=c)
    data = ImageFolderDataModule(root=str(image_tree), num_classes=None, image_size=16, batch_size=2)
    assert data.model_sizes() == {"num_classes": 3} and data.num_classes == 3
    data.setup()
    assert len(data.test_set) == 3 and data.classes == ["cat", "dog", "fox"]
    with pytest.raises(UserError, match="has 3 classes but data.num_classes=2"):
        ImageFolderDataModule(root=str(image_tree), num_classes=2, image_size=16).model_sizes()
    write_image(image_tree / "test" / "yak" / "0.png", "RGB")
    with pytest.raises(UserError, match=r"train and test class folders differ .*only in test: \['yak'\]"):
        ImageFolderDataModule(root=str(image_tree), image_size=16).setup()
    no_test = ImageFolderDataModule(root=str(image_tree), image_size=16, test_split=None)
    no_test.setup()
    assert not no_test.has_test_split


def write_coco_split(root: Path, split: str, categories: int) -> None:
    """One 16x16 image with one box, and ``categories`` categories (ids 1..K)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(root / split / "a.png")
    content = {
        "images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 2, 8, 8], "iscrowd": 0}],
        "categories": [{"id": i, "name": f"c{i}"} for i in range(1, categories + 1)],
    }
    (root / "annotations" / f"{split}.json").write_text(json.dumps(content))


def test_coco_class_count_from_categories_and_test_ann(tmp_path):
    for split in ("train", "val", "test"):
        write_coco_split(tmp_path, split, categories=10)
    args = dict(root=str(tmp_path), train_ann="annotations/train.json", val_ann="annotations/val.json",
                train_images="train", val_images="val", scales=[16], max_size=32, crop_resize=[16],
                crop_size=[8, 16], val_size=16)  # fmt: skip
    data = COCODataModule(num_classes=None, test_ann="annotations/test.json", test_images="test", **args)
    assert data.model_sizes() == {"num_classes": 10}
    data.setup("fit")
    assert len(data.test_set) == 1 and data.num_classes == 10
    with pytest.raises(UserError, match="has 10 classes but data.num_classes=80"):
        COCODataModule(num_classes=80, **args).model_sizes()
    assert not COCODataModule(**args).has_test_split


def test_text_test_documents_are_held_out(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": f"Document {i} says {'word ' * 40}."}) for i in range(20)))
    data = TextDataModule(files=str(docs), val_fraction=0.1, test_fraction=0.2, seq_len=16,
                          vocab_size=300, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    held = data._held_out_documents()
    assert sorted(held.values()).count("val") == 2 and sorted(held.values()).count("test") == 4
    data.setup()
    assert len(data.test_set) > 0 and len(data.val_set) > 0
    meta = json.loads((data.cache_path / "meta.json").read_text())
    assert {split: meta["splits"][split]["documents"] for split in meta["splits"]} == {
        "train": 14,
        "val": 2,
        "test": 4,
    }
    without = TextDataModule(files=str(docs), test_fraction=0.0, seq_len=16, vocab_size=300,
                             cache_dir=str(tmp_path / "cache"))  # fmt: skip
    without.setup()
    assert not without.has_test_split


def test_num_classes_null_flows_from_the_data_into_the_network(image_tree, tmp_path):
    cfg = compose_train("data=imagenet", f"data.root={image_tree}", output_dir=str(tmp_path))
    assert cfg.data.num_classes is None
    assert data_before_task(cfg) is None  # image data is rebuilt later with the network's data config
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["data"]["num_classes"] == resolved["model"]["net"]["num_classes"] == 3
    explicit = compose_train(
        "data=imagenet", f"data.root={image_tree}", "data.num_classes=3", output_dir=str(tmp_path)
    )
    assert data_before_task(explicit) is None  # nothing to take: the data is not read here


class FakeCIFAR(torch.utils.data.Dataset):
    """Stands in for torchvision's CIFAR (no files here): ``size`` images numbered by their pixels."""

    def __init__(self, size: int, transform) -> None:
        self.size, self.transform, self.classes = size, transform, [f"c{i}" for i in range(100)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        image = torch.full((3, 32, 32), index % 256, dtype=torch.uint8)
        return self.transform(image), index % 100


def test_cifar_minival_from_training_images_and_official_test_split(tmp_path, monkeypatch):
    from vitrain.data import CIFARDataModule

    sizes = {True: 500, False: 100}
    monkeypatch.setattr(
        CIFARDataModule, "_dataset", lambda self, train: FakeCIFAR(sizes[train], self._transform(train))
    )
    data = CIFARDataModule(
        root=str(tmp_path), num_classes=100, val_fraction=0.02, mean=[0.5] * 3, std=[0.5] * 3
    )
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (490, 10, 100)
    assert not set(data.val_set.indices) & set(data.train_set.indices)
    image, _ = data.val_set[0]  # evaluation transform: no random crop, normalised with the given stats
    index = data.val_set.indices[0]
    assert torch.allclose(image, torch.full_like(image, (index % 256 / 255 - 0.5) / 0.5), atol=1e-6)
    plain = CIFARDataModule(root=str(tmp_path), num_classes=100)
    plain.setup()
    assert not plain.has_test_split and len(plain.val_set) == 100
