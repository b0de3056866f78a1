"""A learning guard for DETR: a short run on generated COCO-format data must reach an mAP50 floor.

Unit tests check each piece (matcher, loss, transforms, parameter groups) against its definition;
this one checks that the pieces still learn together, through the command line and the COCO
loader: handwritten digits on noise (``tests.helpers.write_digits_coco``: category ids 10, 20, 30,
not contiguous; a few images without objects), random flips and crops, Hungarian matching and COCO
mAP on the original image sizes. A change that makes DETR learn markedly less (boxes converted or
flipped wrongly, labels mapped differently in training and evaluation, a backbone that cannot
train, wrong loss weights) ends far below the floor.

Measured on the 2-core development machine, one thread (best ``val/map50`` of the run):

* this code, seed 42 (the test): 0.77; seeds 1 and 2: 1.00 and 0.66;
* broken on purpose, seed 42: training labels shifted against the validation ones 0.11; frozen
  BatchNorm in the randomly initialised backbone (``+model.net.frozen_bn=true``) 0.27.

The floor (0.45) leaves 0.2 below the worst seed measured, for other machines' rounding.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers import run_train, write_digits_coco
from vitrain.data import COCODataModule

# 32-px canvases with one digit (16-24 px) of three classes, or none: 512 training images
# (32 steps of 16 per epoch), 64 validation images
GUARD_DATA = dict(
    train_size=512, val_size=64, canvas=32, digit_sizes=(16, 24), max_objects=1, digits=(0, 1, 2), seed=0
)
# detr_tiny cut to stride 8 (a 4x4 feature map), width 64, 1 + 1 layers, 4 queries; AdamW 1e-3
# (wd 1e-4), one warm-up epoch then cosine, grad clip 0.1, 12 epochs (384 steps), fp32 on the CPU
GUARD_RUN = [
    "model=detr_tiny", "+model.net.backbone_stages=2", "+model.net.hidden_dim=64", "+model.net.num_heads=2",
    "+model.net.num_encoder_layers=1", "+model.net.num_decoder_layers=1", "+model.net.dim_feedforward=128",
    "+model.net.num_queries=4", "model.backbone_lr=null", "model.eos_coef=0.1",
    "data=coco", "data.train_ann=annotations/instances_train.json",
    "data.val_ann=annotations/instances_val.json", "data.train_images=train", "data.val_images=val",
    "data.scales=[32]", "data.max_size=32", "data.crop_resize=[32]", "data.crop_size=[24,32]",
    "data.val_size=32", "data.batch_size=16", "data.num_workers=0", "data.persistent_workers=false",
    "data.pin_memory=false",
    "optimizer.lr=1e-3", "optimizer.weight_decay=1e-4", "scheduler.warmup_epochs=1",
    "trainer=cpu", "trainer.max_epochs=12", "trainer.gradient_clip_val=0.1",
    "callbacks.model_checkpoint=null", "callbacks.throughput=null", "test_after_fit=false", "seed=42",
]  # fmt: skip
MAP50_FLOOR = 0.45


def best_map50(run_dir: Path) -> float:
    """The best ``val/map50`` of a run's ``metrics.csv``."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return max(float(row["val/map50"]) for row in csv.DictReader(f) if row.get("val/map50"))


@pytest.mark.slow  # ~30 s of one core: the shortest run where DETR clearly leaves its early plateau
def test_detr_learns_digits_on_noise_above_the_floor(tmp_path):
    data = write_digits_coco(tmp_path / "digits", **GUARD_DATA)
    run_dir = tmp_path / "run"
    proc = run_train(run_dir, *GUARD_RUN, f"data.root={data}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    map50 = best_map50(run_dir)
    assert map50 >= MAP50_FLOOR, (
        f"DETR learns less than it did: best val/map50 {map50:.3f} < {MAP50_FLOOR} (0.77 measured when the "
        "floor was set; see this module's docstring)"
    )


def test_digits_on_noise_is_coco_with_sparse_ids_empty_images_and_boxes_on_the_digits(tmp_path):
    root = write_digits_coco(tmp_path / "digits", **{**GUARD_DATA, "train_size": 40, "val_size": 8})
    again = write_digits_coco(tmp_path / "again", **{**GUARD_DATA, "train_size": 40, "val_size": 8})
    ann = "annotations/instances_train.json"
    assert (root / ann).read_text() == (again / ann).read_text()  # the same arguments, the same files
    data = COCODataModule(
        root=str(root), train_ann=ann, val_ann="annotations/instances_val.json", train_images="train",
        val_images="val", val_size=32, max_size=32,
    )  # fmt: skip
    data.setup("fit")
    assert data.num_classes == 3 and data.classes == ["0", "1", "2"]  # ids 10, 20, 30 -> labels 0, 1, 2
    counts, inside = [], []
    for image, target in (data.val_set[i] for i in range(len(data.val_set))):
        counts.append(len(target["labels"]))
        pixels = image * torch.tensor(data.std).view(3, 1, 1) + torch.tensor(data.mean).view(3, 1, 1)
        digit = pixels.min(0).values > 170 / 255  # the digits are brighter than any noise pixel
        for cx, cy, w, h in (target["boxes"] * 32).tolist():
            box = digit[round(cy - h / 2) : round(cy + h / 2), round(cx - w / 2) : round(cx + w / 2)]
            inside.append(box.sum() / digit.sum().clamp(min=1))
    train_counts = [len(data.train_set.annotations[i]) for i in data.train_set.annotations]
    assert 0 in train_counts and max(train_counts + counts) == 1  # some images have no digit
    assert min(inside) > 0.95  # each box holds its digit's bright pixels
