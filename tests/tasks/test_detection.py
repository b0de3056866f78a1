"""DETR training: matcher, set loss, mAP conversions, parameter groups, data, CLI and an overfit."""

from __future__ import annotations

import csv
import itertools
import json
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert
from torchvision.transforms import v2

from tests.helpers import compose_train, run_train
from vitrain.callbacks import Detections
from vitrain.callbacks.detections import tile_grid
from vitrain.data import COCODataModule, ShapesDataModule
from vitrain.data.detection import collate_detection
from vitrain.data.detection_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomSizeCrop,
    ResizeShortSide,
    as_tv_tensors,
    detr_resized_shape,
    network_input,
)
from vitrain.data.shapes import render
from vitrain.errors import UserError
from vitrain.models import create_detr
from vitrain.models.matcher import HungarianMatcher
from vitrain.models.set_criterion import SetCriterion
from vitrain.run.checks import check_pairing
from vitrain.tasks import ClassificationTask, DetectionTask
from vitrain.tasks.detection import (
    detection_param_groups,
    ground_truth,
    postprocess,
    without_crowd,
)
from vitrain.tasks.optim import step_decay

pytestmark = [
    # training_step called without a Trainer (the overfit loop) logs nowhere
    pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`"),
]

TINY = dict(
    hidden_dim=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=64, num_queries=5
)
CLI_TINY = [
    "model=detr_tiny", "data=shapes", "trainer=cpu", "+model.net.hidden_dim=32", "+model.net.num_heads=2",
    "+model.net.num_encoder_layers=1", "+model.net.num_decoder_layers=1", "+model.net.dim_feedforward=64",
    "+model.net.num_queries=5",
]  # fmt: skip


def tiny_task(num_classes: int = 3, **kwargs) -> DetectionTask:
    net = create_detr("detr_tiny", num_classes=num_classes, **TINY)
    return DetectionTask(net, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4), **kwargs)


def random_targets(generator: torch.Generator, counts: list[int], num_classes: int = 3) -> list[dict]:
    out = []
    for count in counts:
        centres = torch.rand(count, 2, generator=generator) * 0.6 + 0.2
        sizes = torch.rand(count, 2, generator=generator) * 0.3 + 0.05
        labels = torch.randint(num_classes, (count,), generator=generator)
        out.append({"boxes": torch.cat([centres, sizes], 1), "labels": labels})
    return out


# ---------------------------------------------------------------- matcher and loss
def brute_force_cost(matcher: HungarianMatcher, logits, boxes, target) -> float:
    """The lowest total cost over every injective assignment of targets to queries."""
    cost = matcher.cost_matrix(logits.softmax(-1), boxes, target["labels"], target["boxes"])
    num_queries, num_targets = cost.shape
    return min(
        (
            sum(cost[q, t].item() for t, q in enumerate(queries))
            for queries in itertools.permutations(range(num_queries), num_targets)
        ),
        default=0.0,
    )


def test_matcher_equals_brute_force_search():
    generator = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)
    for counts in ([0, 1, 3], [4, 2, 5], [5, 5, 1]):
        logits = torch.randn(len(counts), 5, 4, generator=generator)
        boxes = torch.cat(
            [
                torch.rand(len(counts), 5, 2, generator=generator),
                0.1 + 0.3 * torch.rand(len(counts), 5, 2, generator=generator),
            ],
            -1,
        )
        targets = random_targets(generator, counts)
        indices = matcher(logits, boxes, targets)
        for b, (queries, target_idx) in enumerate(indices):
            assert len(queries) == len(target_idx) == counts[b]
            assert sorted(target_idx.tolist()) == list(range(counts[b]))  # every target once
            assert len(set(queries.tolist())) == counts[b]  # a query predicts one target at most
            cost = matcher.cost_matrix(
                logits[b].softmax(-1), boxes[b], targets[b]["labels"], targets[b]["boxes"]
            )
            found = cost[queries, target_idx].sum().item()
            assert found == pytest.approx(
                brute_force_cost(matcher, logits[b], boxes[b], targets[b]), abs=1e-5
            )


def test_batched_costs_give_the_assignments_of_per_image_matrices():
    """The matcher computes one cost matrix for the whole batch (as the reference); each image's
    block holds exactly the per-image costs, so the assignments are those of per-image matching."""
    generator = torch.Generator().manual_seed(1)
    matcher = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)
    counts = [3, 0, 7, 1]
    logits = torch.randn(len(counts), 10, 4, generator=generator)
    boxes = torch.cat([torch.rand(len(counts), 10, 2, generator=generator), 0.05 + 0.4 * torch.rand(len(counts), 10, 2, generator=generator)], -1)  # fmt: skip
    targets = random_targets(generator, counts)
    for b, (queries, target_idx) in enumerate(matcher(logits, boxes, targets)):
        cost = matcher.cost_matrix(logits[b].softmax(-1), boxes[b], targets[b]["labels"], targets[b]["boxes"])
        rows, cols = linear_sum_assignment(cost.numpy())
        assert queries.tolist() == rows.tolist() and target_idx.tolist() == cols.tolist()
    empty = matcher(logits[:2], boxes[:2], random_targets(generator, [0, 0]))
    assert [(len(q), len(t)) for q, t in empty] == [(0, 0), (0, 0)]


def test_matcher_rejects_non_finite_predictions():
    matcher = HungarianMatcher()
    logits, boxes = torch.randn(1, 3, 4), torch.full((1, 3, 4), 0.5)
    boxes[0, 1, 0] = float("nan")
    targets = random_targets(torch.Generator().manual_seed(0), [2])
    with pytest.raises(UserError, match="NaN or inf.*gradient_clip_val.*bf16"):
        matcher(logits, boxes, targets)


def perfect_outputs(targets: list[dict], num_queries: int, num_classes: int) -> dict:
    """Predictions that put target i at query 2 * i with certainty, no object elsewhere."""
    logits = torch.full((len(targets), num_queries, num_classes + 1), -30.0)
    logits[..., -1] = 30.0
    boxes = torch.full((len(targets), num_queries, 4), 0.5)
    for b, target in enumerate(targets):
        for i, (label, box) in enumerate(zip(target["labels"], target["boxes"], strict=True)):
            logits[b, 2 * i] = -30.0
            logits[b, 2 * i, label] = 30.0
            boxes[b, 2 * i] = box
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_criterion_is_zero_for_perfect_predictions_and_handles_empty_targets():
    criterion = SetCriterion(3, HungarianMatcher(), eos_coef=0.1)
    targets = random_targets(torch.Generator().manual_seed(1), [2, 0, 3])
    outputs = perfect_outputs(targets, num_queries=8, num_classes=3)
    outputs["aux_outputs"] = [dict(outputs)]
    loss, parts = criterion(outputs, targets)
    assert loss.item() < 1e-4 and set(parts) == {"loss_ce", "loss_bbox", "loss_giou"}
    # wrong boxes cost L1 and GIoU; empty targets: only the no-object cross-entropy
    outputs["pred_boxes"] = outputs["pred_boxes"] * 0.9
    assert criterion(outputs, targets)[1]["loss_bbox"] > 0.01
    logits = torch.randn(2, 6, 4, requires_grad=True)
    boxes = torch.rand(2, 6, 4, requires_grad=True)
    empty = [{"boxes": torch.empty(0, 4), "labels": torch.empty(0, dtype=torch.int64)}] * 2
    loss, parts = criterion({"pred_logits": logits, "pred_boxes": boxes}, empty)
    loss.backward()
    assert torch.isfinite(loss) and parts["loss_bbox"] == 0 and parts["loss_giou"] == 0
    assert logits.grad.abs().sum() > 0


def test_map_is_one_when_predictions_equal_ground_truth():
    """Boxes go back to original image coordinates: the images were resized (orig_size)."""
    task = tiny_task()
    targets = random_targets(torch.Generator().manual_seed(2), [3, 1, 2])
    for target, size in zip(targets, ([480, 640], [100, 80], [64, 64]), strict=True):
        target["orig_size"] = torch.tensor(size)
        target["iscrowd"] = torch.zeros(len(target["labels"]), dtype=torch.bool)
    outputs = perfect_outputs(targets, num_queries=8, num_classes=3)
    predictions, truth = postprocess(outputs, targets), ground_truth(targets)
    height, width = targets[0]["orig_size"].tolist()
    expected = box_convert(targets[0]["boxes"], "cxcywh", "xyxy") * torch.tensor(
        [width, height, width, height]
    )
    torch.testing.assert_close(truth[0]["boxes"], expected)
    task.val_map.update(predictions, truth)
    results = task.val_map.compute()
    assert results["map"] == pytest.approx(1.0) and results["map_50"] == pytest.approx(1.0)


def test_param_groups_backbone_lr_and_weight_decay():
    # the reference (facebookresearch/detr main.py) decays every parameter: one group per lr
    task = tiny_task(backbone_lr=1e-5)
    groups = {g["name"]: g for g in task.build_optimizer().param_groups}
    assert set(groups) == {"decay", "backbone_decay"} and groups["decay"]["weight_decay"] == 1e-4
    names = {id(p): n for n, p in task.net.named_parameters()}
    decayed = {names[id(p)] for p in groups["decay"]["params"]}
    assert {"query_embed.weight", "transformer.decoder_norm.weight", "class_embed.bias"} <= decayed
    # decay_1d=false: the usual rule (no decay on norms and biases)
    task = tiny_task(backbone_lr=1e-5, decay_1d=False)
    optimizer = task.build_optimizer()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"decay", "no_decay", "backbone_decay", "backbone_no_decay"}
    assert groups["backbone_decay"]["lr"] == groups["backbone_no_decay"]["lr"] == 1e-5
    assert groups["decay"]["lr"] == 1e-3 and groups["no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in task.net.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert "transformer.decoder_norm.weight" in no_decay and "query_embed.weight" not in no_decay
    assert all(names[id(p)].startswith("backbone.") for p in groups["backbone_decay"]["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)
    # a frozen stem is left out; backbone_lr=None: one rate
    net = create_detr("detr_tiny", num_classes=3, frozen_bn=True, freeze_stem=True, **TINY)
    grouped = [p for g in detection_param_groups(net, None) for p in g["params"]]
    assert all(p.requires_grad for p in grouped) and all(
        "lr" not in g for g in detection_param_groups(net, None)
    )


def test_step_decay_drops_the_lr():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = step_decay(
        optimizer, total_steps=50, steps_per_epoch=10, drop_epochs=[4], gamma=0.1, warmup_epochs=1
    )
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[39] == 1.0
    assert lrs[40] == pytest.approx(0.1) and lrs[49] == pytest.approx(0.1)


# ---------------------------------------------------------------- data
def test_transforms_move_boxes_with_the_image():
    image = Image.new("RGB", (100, 50))
    target = {
        "boxes": torch.tensor([[10.0, 5, 30, 25], [80, 0, 100, 50]]),
        "labels": torch.tensor([1, 2]),
        "iscrowd": torch.tensor([False, True]),
    }
    image, target = as_tv_tensors(image, target)
    _, flipped = v2.RandomHorizontalFlip(p=1.0)(image, target)
    assert flipped["boxes"].tolist() == [[70, 5, 90, 25], [0, 0, 20, 50]]
    resized, scaled = ResizeShortSide([25])(image, target)
    assert resized.size == (50, 25) and scaled["boxes"][0].tolist() == [5, 2.5, 15, 12.5]
    cropped, kept = RandomSizeCrop(40, 40)(image, target)
    assert cropped.size == (40, 40)
    assert (kept["boxes"] >= 0).all() and (kept["boxes"] <= 40).all()
    assert len(kept["boxes"]) == len(kept["labels"]) == len(kept["iscrowd"])
    tensor, normalised = network_input(IMAGENET_MEAN, IMAGENET_STD)(image, target)
    assert tensor.shape == (3, 50, 100) and normalised["size"].tolist() == [50, 100]
    torch.testing.assert_close(normalised["boxes"][0], torch.tensor([0.2, 0.3, 0.2, 0.4]))


def test_resize_follows_detr_not_random_shortest_size():
    """DETR rounds the capped short side first and truncates the long one; v2's
    RandomShortestSize truncates both sides of one ratio (the reason vitrain keeps its own)."""
    assert detr_resized_shape(1000, 500, 800, max_size=1333) == (1332, 666)  # long side capped
    assert detr_resized_shape(640, 427, 800, max_size=1333) == (1199, 800)  # int(800 * 640 / 427)
    assert detr_resized_shape(500, 1000, 800, max_size=1333) == (666, 1332)
    image = Image.new("RGB", (1000, 500))
    assert v2.RandomShortestSize(800, max_size=1333)(image).size == (1333, 666)
    assert ResizeShortSide([800], max_size=1333)(*as_tv_tensors(image, {"boxes": torch.zeros(0, 4)}))[
        0
    ].size == (1332, 666)


def test_collate_pads_and_masks():
    samples = [(torch.ones(3, 4, 6), {"id": 0}), (torch.ones(3, 5, 3), {"id": 1})]
    images, mask, targets = collate_detection(samples)
    assert images.shape == (2, 3, 5, 6) and [t["id"] for t in targets] == [0, 1]
    assert mask[0, :4, :6].logical_not().all() and mask[0, 4].all()
    assert mask[1, :, 3:].all() and not mask[1, :, :3].any()
    assert images[1, :, :, 3:].abs().sum() == 0


def test_shapes_are_deterministic_with_exact_boxes():
    image, boxes, labels = render(seed=0, split=1, index=3, size=64, objects=(2, 3), sides=(12, 24))
    again, boxes_again, _ = render(seed=0, split=1, index=3, size=64, objects=(2, 3), sides=(12, 24))
    assert np.array_equal(np.asarray(image), np.asarray(again)) and torch.equal(boxes, boxes_again)
    assert 2 <= len(boxes) <= 3 and ((boxes >= 0) & (boxes <= 64)).all() and labels.max() < 3
    other, _, _ = render(seed=1, split=1, index=3, size=64, objects=(2, 3), sides=(12, 24))
    assert not np.array_equal(np.asarray(image), np.asarray(other))
    data = ShapesDataModule(image_size=32, train_size=4, val_size=2, min_objects=0, max_objects=2)
    data.setup()
    assert (
        len(data.train_set) == 4
        and len(data.val_set) == 2
        and data.classes == ["circle", "square", "triangle"]
    )
    with pytest.raises(UserError, match="data.num_classes=5.*data.num_classes=3"):
        ShapesDataModule(num_classes=5)


def test_train_loader_resumes_after_the_batches_already_seen():
    data = ShapesDataModule(image_size=16, train_size=8, val_size=3, batch_size=2)
    data.setup()
    loader = data.train_dataloader()
    batches = iter(loader)
    ids = [[t["image_id"].item() for t in next(batches)[2]] for _ in range(3)]
    state = loader.state_dict()
    ids += [[t["image_id"].item() for t in batch[2]] for batch in batches]
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    assert [[t["image_id"].item() for t in batch[2]] for batch in resumed] == ids[3:]
    assert sorted(t["image_id"].item() for batch in data.val_dataloader() for t in batch[2]) == [0, 1, 2]


def write_coco(root: Path, split: str = "train") -> Path:
    """A COCO-format dataset: category ids 1, 3 and 7; image 2 has no annotations; image 1
    has a crowd box and a box reaching past its right edge."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
    ]
    for info in images:
        Image.new("RGB", (info["width"], info["height"]), (120, 30, 200)).save(
            root / split / info["file_name"]
        )
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [4, 3, 10, 12], "iscrowd": 0, "area": 120},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [30, 10, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "iscrowd": 1, "area": 64},
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def coco(root: Path, **kwargs) -> COCODataModule:
    args = dict(
        train_ann="annotations/instances_train.json", val_ann="annotations/instances_val.json",
        train_images="train", val_images="val", num_classes=3, scales=[60], max_size=100,
        crop_resize=[40], crop_size=[20, 30], val_size=60, batch_size=2,
    )  # fmt: skip
    return COCODataModule(root=str(root), **{**args, **kwargs})


def test_coco_loader_maps_categories_clips_boxes_and_flags_crowds(tmp_path):
    write_coco(tmp_path, "train"), write_coco(tmp_path, "val")
    data = coco(tmp_path)
    data.setup("fit")
    assert data.classes == ["person", "car", "train"] and len(data.val_set) == 2
    image, target = data.val_set[0]
    assert image.shape == (3, 60, 80) and target["orig_size"].tolist() == [30, 40]
    assert target["labels"].tolist() == [2, 1, 0] and target["iscrowd"].tolist() == [False, False, True]
    assert without_crowd([target])[0]["labels"].tolist() == [2, 1]  # what the loss sees
    truth = ground_truth([target])[0]["boxes"]  # back in original pixels, clipped at x = 40
    torch.testing.assert_close(truth, torch.tensor([[4.0, 3, 14, 15], [30, 10, 40, 20], [0, 0, 8, 8]]))
    empty_image, empty = data.val_set[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    images, mask, targets = next(iter(data.val_dataloader()))
    assert images.shape == (2, 3, 60, 80) and mask[1, :, 60:].all() and len(targets) == 2
    # crowd boxes stay out of the loss; training batches and an empty image go through the task
    task = tiny_task()
    loss = task.training_step(next(iter(data.train_dataloader())), 0)
    assert torch.isfinite(loss)
    # original ids: label = category id, num_classes = 8
    original = coco(tmp_path, contiguous_ids=False, num_classes=8)
    original.setup("fit")
    assert original.val_set[0][1]["labels"].tolist() == [7, 3, 1] and original.classes[3] == "car"


def test_coco_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(UserError, match="data.root=.*nowhere: no such folder"):
        coco(tmp_path / "nowhere").setup("fit")
    with pytest.raises(UserError, match=r"data.train_ann=.*instances_train.json: no such annotation file"):
        coco(tmp_path).setup("fit")
    write_coco(tmp_path, "train"), write_coco(tmp_path, "val")
    with pytest.raises(UserError, match=r"has 3 classes but data.num_classes=80: set data.num_classes=3"):
        coco(tmp_path, num_classes=80).setup("fit")
    with pytest.raises(UserError, match="data.val_images=.*missing: no such image folder"):
        coco(tmp_path, val_images="missing").setup("fit")
    path = tmp_path / "annotations" / "instances_val.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["category_id"] = 5
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match="annotation 10 has category_id=5"):
        coco(tmp_path).setup("fit")
    path.write_text(json.dumps({**content, "images": []}))
    with pytest.raises(UserError, match="lists no images: the dataset is empty"):
        coco(tmp_path).setup("fit")


def test_detections_callback_needs_a_detection_model():
    from vitrain.models import create_vit

    vit = create_vit(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=1, num_classes=2
    )
    with pytest.raises(UserError, match="callbacks.detections needs a detection model"):
        Detections().setup(
            L.Trainer(logger=False), ClassificationTask(vit, optimizer=partial(torch.optim.AdamW)), "fit"
        )
    grid = tile_grid([np.zeros((8, 8, 3), np.uint8)] * 5, columns=4)
    assert grid.shape == (2 * 10 + 2, 4 * 10 + 2, 3)


# ---------------------------------------------------------------- learning
def test_overfitting_a_few_images_lowers_the_loss_and_raises_map50():
    torch.manual_seed(0)
    data = ShapesDataModule(
        image_size=64, train_size=4, val_size=1, min_objects=1, max_objects=2, batch_size=4
    )
    data.setup()
    batch = collate_detection([data.val_set.transform(*render_sample(data, i)) for i in range(4)])
    task = tiny_task(backbone_lr=None, eos_coef=0.2)
    optimizer = task.build_optimizer()
    for group in optimizer.param_groups:
        group["lr"] = 2e-3
    losses = []
    for step in range(150):
        loss = task.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 0.1)
        optimizer.step()
        losses.append(loss.item())
    task.eval()
    task.validation_step(batch, 0)
    map50 = task.val_map.compute()["map_50"].item()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-10:])
    assert map50 > 0.5, map50


def render_sample(data: ShapesDataModule, index: int):
    image, boxes, labels = render(0, 0, index, data.image_size, data.objects, data.sides)
    target = {
        "boxes": boxes, "labels": labels, "iscrowd": torch.zeros(len(labels), dtype=torch.bool),
        "orig_size": torch.tensor([data.image_size] * 2), "image_id": torch.tensor(index),
    }  # fmt: skip
    return image, target


# ---------------------------------------------------------------- command line
def test_cli_errors_are_one_message(tmp_path):
    proc = run_train(tmp_path / "coco", "model=detr_r50", "data=coco", "data.root=/nonexistent")
    assert proc.returncode == 1
    assert "data.root=/nonexistent: no such folder" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    cfg = compose_train("model=detr_tiny")  # the default data is digits: a clear error
    with pytest.raises(UserError, match="model=detr_tiny .* needs detection data.*data=digits"):
        check_pairing(cfg, {"model": "detr_tiny", "data": "digits"})


@pytest.mark.slow
def test_cli_trains_on_shapes_and_draws_boxes(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(
        run_dir, *CLI_TINY, "callbacks=detection", "data.train_size=16", "data.val_size=4", "data.test_size=4",
        "data.batch_size=8",
        "trainer.max_epochs=2", "trainer.log_every_n_steps=2", "callbacks.detections.num_images=4",
        "callbacks.throughput=null",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["monitor"] == {"metric": "val/map", "mode": "max"} and summary["status"] == "completed"
    assert "test/map" in summary["test"]  # the best checkpoint on the held-out shapes
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keys = set(rows[0])
    assert {
        "train/loss",
        "train/loss_ce",
        "train/loss_bbox",
        "train/loss_giou",
        "val/map",
        "val/map50",
    } <= keys
    assert {"val/map75", "val/map_small"} <= keys
    # the loss parts in every row the logger writes (every 2nd of the 4 steps; see log_written_steps)
    written = [r for r in rows if r.get("train/loss")]
    assert len(written) == 2 and all(r["train/loss_ce"] and r["train/loss_giou"] for r in written)
    # a size range without ground-truth boxes is not logged (COCO's -1 is n/a, not a score)
    sizes = [
        float(r[k]) for r in rows for k in ("val/map_small", "val/map_medium", "val/map_large") if r.get(k)
    ]
    assert sizes and min(sizes) >= 0.0
    picture = Image.open(run_dir / "detections" / "epoch001.png")
    assert picture.size == (4 * 258 + 2, 258 + 2)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["vitrain"]["class_names"] == ["circle", "square", "triangle"]
