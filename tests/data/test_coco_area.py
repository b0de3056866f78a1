"""COCO annotation areas reach the mAP, so map_small/medium/large split as the official evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from torchmetrics.detection import MeanAveragePrecision

from vitrain.data.coco import COCODataModule
from vitrain.tasks.detection import ground_truth


def write_dataset(root: Path, split: str) -> None:
    """One 200x200 image: a 50x50 box whose segment covers only 900 px (small by area, medium
    by box), and a crowd region."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    Image.new("RGB", (200, 200), (90, 10, 30)).save(root / split / "a.png")
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 50, 50], "iscrowd": 0, "area": 900.0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 80, 80], "iscrowd": 1, "area": 5000.0},
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 200}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def datamodule(root: Path) -> COCODataModule:
    for split in ("train", "val"):
        write_dataset(root, split)
    data = COCODataModule(
        root=str(root), train_ann="annotations/instances_train.json", val_ann="annotations/instances_val.json",
        train_images="train", val_images="val", num_classes=1, scales=[64], max_size=100, crop_resize=[80],
        crop_size=[40, 60], val_size=64, batch_size=1,
    )  # fmt: skip
    data.setup("fit")
    return data


def test_annotation_area_decides_the_size_range(tmp_path):
    data = datamodule(tmp_path)
    _, target = data.val_set[0]
    assert target["area"].tolist() == [900.0, 5000.0]  # original pixels, through the resize
    truth = ground_truth([target])
    assert truth[0]["area"].tolist() == [900.0, 5000.0] and truth[0]["iscrowd"].tolist() == [0, 1]
    prediction = [
        {"boxes": truth[0]["boxes"][:1], "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    ]
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
    metric.update(prediction, truth)
    results = metric.compute()
    # the official evaluator: area 900 < 32^2 is small, although the box (2500 px) is medium
    assert results["map_small"].item() == 1.0 and results["map_medium"].item() == -1.0
    assert results["map"].item() == 1.0  # the crowd region is ignored, not a missed object


def test_area_stays_in_step_with_the_boxes_through_training_crops(tmp_path):
    data = datamodule(tmp_path)
    torch.manual_seed(0)
    for _ in range(10):
        _, target = data.train_set[0]
        assert target["area"].shape == target["labels"].shape == target["iscrowd"].shape
