"""SAM task: prompt sampling, losses, round plan, a learning step, validation metrics, layer decay."""

from __future__ import annotations

import random
from functools import partial

import pytest
import torch

from vitrain.data.segmentation import ShapesMasksDataModule
from vitrain.errors import UserError
from vitrain.models.sam_weights import create_sam
from vitrain.tasks.optim import param_groups, step_decay
from vitrain.tasks.segmentation import (
    SegmentationTask,
    centre_points,
    dice_loss,
    error_points,
    mask_iou,
    noisy_boxes,
    sam_layers,
    sigmoid_focal_loss,
)

TINY = dict(
    image_size=32, patch_size=4, window_size=4, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8, decoder_num_heads=2,
    decoder_mlp_dim=64, iou_head_hidden_dim=32,
)  # fmt: skip


def make_task(**kwargs) -> SegmentationTask:
    torch.manual_seed(0)
    task = SegmentationTask(create_sam("sam_tiny", **TINY), partial(torch.optim.AdamW, lr=2e-3), **kwargs)
    task.log = lambda *args, **kw: None  # no trainer attached
    return task


def batch(n=4, seed=0):
    dm = ShapesMasksDataModule(image_size=32, train_size=n, val_size=n, batch_size=n, seed=seed)
    dm.setup()
    return next(iter(dm.val_dataloader()))


def test_round_plan_has_the_papers_shape():
    task = make_task()
    random.seed(0)
    plans = [task.round_plan() for _ in range(20)]
    for plan in plans:
        assert len(plan) == 10 and plan[-1] is False and plan.count(False) == 2 and plan.count(True) == 8
    assert len({tuple(p) for p in plans}) > 1  # the other mask-only round moves
    assert make_task(num_rounds=3, mask_only_rounds=0).round_plan() == [True, True]
    with pytest.raises(UserError, match="mask_only_rounds"):
        make_task(num_rounds=2, mask_only_rounds=2)


def test_error_points_fall_in_the_error_region_with_the_right_label():
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[:, 2:6, 2:6] = True
    pred = gt.clone()
    pred[0, 2:6, 2:4] = False  # missed part -> foreground click
    pred[1, 0, :] = True  # spill -> background click
    torch.manual_seed(0)
    for _ in range(10):
        points, positive = error_points(pred, gt)
        x, y = points.long().T
        assert (pred ^ gt)[torch.arange(2), y, x].all()
        assert positive.tolist() == [True, False]
    points, positive = error_points(gt.clone(), gt)  # perfect: a foreground point on the object
    assert positive.all()


def test_noisy_boxes_are_bounded_and_valid():
    boxes = torch.tensor([[300.0, 300.0, 500.0, 320.0]]).repeat(2000, 1)  # 200 x 20 px
    torch.manual_seed(0)
    jitter = noisy_boxes(boxes, 0.1, 20.0, 1024) - boxes
    assert jitter[:, 0].abs().max() <= 20.0 + 1e-4  # std 20 px, clipped at 20
    assert 12 < jitter[:, 0].std() < 20
    assert jitter[:, 1].std() == pytest.approx(2.0, rel=0.1)  # 10% of the 20 px height
    out = noisy_boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]).repeat(100, 1), 0.5, 20.0, 64)
    assert (out[:, 2] >= out[:, 0]).all() and (out >= 0).all() and (out <= 63).all()


def test_losses_and_iou():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    good, bad = (target * 20 - 10), (10 - target * 20)
    assert sigmoid_focal_loss(good, target) < 1e-3 < sigmoid_focal_loss(bad, target)
    assert dice_loss(good, target) < 0.01 and dice_loss(bad, target) > 0.9
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[1:3] = True
    assert mask_iou(a, b).item() == pytest.approx(1 / 3)
    assert centre_points(torch.ones(1, 5, 5, dtype=torch.bool)).tolist() == [[2.0, 2.0]]


def test_training_steps_lower_the_loss_and_validation_logs_every_metric():
    task = make_task(num_rounds=3, mask_only_rounds=1)
    images, targets = batch(4)
    opt = task.build_optimizer()
    losses = []
    for _ in range(15):
        torch.manual_seed(1)  # the same prompts each step: the loss must fall
        loss = task.training_step((images, targets), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    logged = {}
    task.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    task.eval()
    with torch.no_grad():
        task.validation_step((images, targets), 0)
        task.on_validation_epoch_end()
    assert set(logged) == {"val/miou_box", "val/miou_point", *(f"val/miou_click{i}" for i in range(1, 6))}
    assert all(0 <= v <= 1 for v in logged.values())
    again = {}
    task.log = lambda name, value, **kw: again.__setitem__(name, float(value))
    with torch.no_grad():
        task.validation_step((images, targets), 0)
        task.on_validation_epoch_end()
    assert again == logged  # fixed prompts: the same weights give the same numbers


def test_batch_without_objects_gives_a_zero_loss():
    task = make_task(num_rounds=2, mask_only_rounds=0)
    images, targets = batch(2)
    empty = [{**t, "masks": t["masks"][:0], "boxes": t["boxes"][:0]} for t in targets]
    loss = task.training_step((images, empty), 0)
    assert loss.item() == 0.0 and loss.requires_grad
    task.validation_step((images, empty), 0)  # nothing to measure, no error


def test_layer_decay_groups_and_step_schedule():
    net = create_sam("sam_tiny", **TINY)
    groups = param_groups(net, 0.8, layers=sam_layers(net))
    scales = {g["name"]: g["lr_scale"] for g in groups}
    assert scales["layer0_no_decay"] == pytest.approx(0.8**3)  # pos_embed, patch bias
    assert scales["layer1"] == pytest.approx(0.8**2) and scales["layer3"] == 1.0
    named = {id(p): n for n, p in net.named_parameters()}
    top = next(g for g in groups if g["name"] == "layer3")
    assert all(not named[id(p)].startswith("image_encoder.blocks") for p in top["params"])
    no_decay = {named[id(p)] for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    assert "image_encoder.pos_embed" in no_decay and "image_encoder.blocks.0.attn.rel_pos_h" in no_decay
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=8e-4)
    # SAM's schedule is optim.step_decay; in a max_steps run the whole run is one schedule epoch
    sched = step_decay(opt, 100, 100, drop_epochs=[0.6, 0.9], warmup_epochs=0.05)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(8e-4 / 5) and lrs[10] == pytest.approx(8e-4)
    assert lrs[60] == pytest.approx(8e-5) and lrs[95] == pytest.approx(8e-6)


def test_round_loss_takes_the_best_of_three_masks_in_float32_under_bf16():
    task = make_task()
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[:, 2:6, 2:6] = True
    perfect = gt.float() * 20 - 10
    logits = torch.stack([-perfect, perfect, torch.zeros_like(perfect)], 1).to(torch.bfloat16)  # (2, 3, 8, 8)
    iou_pred = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, parts = task.round_loss(logits, iou_pred, gt)
    assert loss.dtype == torch.float32
    assert parts["dice"] < 0.05 and parts["focal"] < 1e-3  # the perfect mask was chosen
    # the IoU head regresses the actual IoU of every mask: (0, 1, 0) here, predicted exactly
    assert parts["iou"] == pytest.approx(0.0, abs=1e-3)
    worse, _ = task.round_loss(logits[:, [0, 2]], iou_pred[:, [0, 2]], gt)
    assert worse > loss
