"""SAM (interactive training step): the vitrain training step against a plain loop of the same
prompt rounds, and the share of the step spent in the rounds.

1. vitrain = a Lightning ``Trainer`` fitting ``SegmentationTask`` (the paper's 11 rounds per
   object: a point or a noisy box, then a point from the error region of the previous mask each
   round, two mask-only rounds; the previous round's logits fed back; focal + dice + IoU loss);
   plain = a hand-written loop doing the same rounds with the same network calls and loss
   helpers (segment-anything has no training code to follow). Same initial weights, batches of
   the embedded shapes data with masks, AdamW groups (no decay on biases, norms and position
   tables), ``warmup_cosine``, gradient clipping at 1.0; the prompts are random (first prompt,
   box noise, error-region points, the place of a mask-only round): each side draws from its own
   copy of one random stream, so both end with the same weights.
2. Where the step goes, on the plain side split in phases: image encoder forward, the prompt
   rounds' forward (prompt sampling, decoder, losses), their backward (through the decoder to
   the image embeddings), the encoder's backward, the optimizer.
"""

from __future__ import annotations

import copy
import random
import statistics
from dataclasses import dataclass, field, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    STEP_GOAL,
    Ratio,
    Spec,
    lockstep,
    module_args,
    now,
    print_side_by_side,
    restore_rng,
    seeded_state,
    step_loader,
)
from vitrain.data.segmentation import ShapesMasksDataModule, collate_segmentation
from vitrain.models import create_sam
from vitrain.tasks import SegmentationTask
from vitrain.tasks.optim import warmup_cosine
from vitrain.tasks.segmentation import (
    dice_loss,
    downsample_masks,
    error_points,
    gather_objects,
    mask_iou,
    noisy_boxes,
    sample_points,
    sigmoid_focal_loss,
)

TITLE = "SAM interactive training step: vitrain against a plain loop of the same prompt rounds"


@dataclass
class SAMFamily:
    """SAM on batches of the embedded shapes data with masks: both sides (see ``Family``)."""

    label: str
    name: str = "sam_tiny"
    image_size: int = 64
    render_size: int | None = None  # the shapes are drawn at this size, then resized (None: image_size)
    batch: int = 4
    num_rounds: int = 11
    mask_only_rounds: int = 2
    device: str = "cpu"
    bf16: bool = False
    net_kwargs: dict = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_epochs: float = 0.1
    grad_clip: float = 1.0
    weights: tuple[float, float, float] = (20.0, 1.0, 1.0)  # focal, dice, IoU (the paper)
    unique: int = 4

    @property
    def trainer_kwargs(self) -> dict:
        return {"gradient_clip_val": self.grad_clip}

    def template(self) -> nn.Module:
        torch.manual_seed(0)
        return create_sam(self.name, image_size=self.image_size, **self.net_kwargs).to(self.device)

    def batches(self) -> list:
        data = ShapesMasksDataModule(
            image_size=self.image_size, render_size=self.render_size, train_size=self.batch * self.unique,
            val_size=1, test_size=0,
        )  # fmt: skip
        data.setup("fit")
        samples = [data.train_set[i] for i in range(self.batch * self.unique)]
        out = []
        for start in range(0, len(samples), self.batch):
            images, targets = collate_segmentation(samples[start : start + self.batch])
            out.append((images.to(self.device), targets))
        return out

    def optimizer(self):
        return partial(torch.optim.AdamW, lr=self.lr, weight_decay=self.weight_decay)

    def scheduler(self):
        return partial(warmup_cosine, warmup_epochs=self.warmup_epochs, min_lr_ratio=0.01)

    def task(self, net: nn.Module) -> SegmentationTask:
        focal, dice, iou = self.weights
        return SegmentationTask(
            net, self.optimizer(), self.scheduler(), num_rounds=self.num_rounds, mask_only_rounds=self.mask_only_rounds,
            focal_weight=focal, dice_weight=dice, iou_weight=iou,
        )  # fmt: skip

    def plain(self, net: nn.Module, batches: list, steps: int) -> SAMLoop:
        return SAMLoop(net, batches, steps, self)


def decay_groups(net: nn.Module) -> list[dict]:
    """No weight decay on biases, norms (1-d) and the position tables; ``[decay, no_decay]``."""
    skip = net.no_weight_decay()
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.split(".")[-1] in skip else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class SAMLoop:
    """The interactive training step of the SAM paper (appendix A), written as a plain loop."""

    def __init__(self, net: nn.Module, batches: list, steps: int, family: SAMFamily) -> None:
        self.family = family
        self.net = net.train()
        self.optimizer = family.optimizer()(decay_groups(net))
        self.schedule = family.scheduler()(self.optimizer, total_steps=steps, steps_per_epoch=steps)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.batches = iter(step_loader(batches, steps))
        self.ctx = torch.autocast(torch.device(family.device).type, dtype=torch.bfloat16, enabled=family.bf16)

    def plan(self) -> list[bool]:
        """Whether each round adds a point: the first does; one mask-only round last, the others at
        random places among the point rounds."""
        later, mask_only = self.family.num_rounds - 1, self.family.mask_only_rounds
        if mask_only == 0:
            return [True, *[True] * later]
        plan = [True] * (later - mask_only)
        for _ in range(mask_only - 1):
            plan.insert(random.randint(0, len(plan)), False)
        return [True, *plan, False]

    def decode(
        self, emb, coords, labels, boxes, use_box, prev, multimask: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder pass: point-only and box-prompted objects in two groups (the box objects
        without the first point); ``(logits (N, M, h, w), iou (N, M), most confident (N, 1, h, w))``."""
        n, m, low = emb.shape[0], 3 if multimask else 1, self.net.low_res_size
        logits, iou = emb.new_zeros(n, m, low, low), emb.new_zeros(n, m)
        for group, with_box in ((~use_box, False), (use_box, True)):
            if not group.any():
                continue
            start = 1 if with_box else 0
            g_logits, g_iou = self.net.decode(
                emb[group],
                points=(coords[group, start:], labels[group, start:]) if coords.shape[1] > start else None,
                boxes=boxes[group] if with_box else None,
                mask_inputs=prev[group] if prev is not None else None,
                multimask_output=multimask and not with_box,
            )
            logits[group] = g_logits.expand(-1, m, -1, -1).to(logits.dtype)
            iou[group] = g_iou.expand(-1, m).to(iou.dtype)
        chosen = logits[torch.arange(n, device=logits.device), iou.argmax(1)][:, None]
        return logits, iou, chosen

    def round_loss(self, logits: Tensor, iou_pred: Tensor, gt: Tensor) -> Tensor:
        """The lowest focal + dice loss of each object's masks plus the IoU head's MSE, float32."""
        focal_w, dice_w, iou_w = self.family.weights
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, iou_pred = logits.float(), iou_pred.float()
            target = gt[:, None].float().expand_as(logits)
            mask_loss = focal_w * sigmoid_focal_loss(logits, target) + dice_w * dice_loss(logits, target)
            best = mask_loss.argmin(1)
            rows = torch.arange(logits.shape[0], device=logits.device)
            actual = mask_iou(logits.detach() > 0, target > 0.5)
            iou_loss = F.mse_loss(iou_pred, actual, reduction="none").mean(1)
            return (mask_loss[rows, best] + iou_w * iou_loss).mean()

    def rounds(self, embeddings: Tensor, images: Tensor, targets: list) -> Tensor:
        """The loss of the prompt rounds of every object of the batch (mean over rounds)."""
        masks, boxes, image_index = gather_objects(targets, embeddings.device)
        low = self.net.low_res_size
        gt = downsample_masks(masks, low)
        scale = images.shape[-1] / low
        n, device = gt.shape[0], gt.device
        use_box = torch.rand(n, device=device) < 0.5
        noisy = noisy_boxes(boxes, 0.1, 20.0, images.shape[-1])
        coords = torch.zeros(n, 0, 2, device=device)
        labels = torch.zeros(n, 0, dtype=torch.long, device=device)
        first = sample_points(masks)
        emb = embeddings[image_index]
        prev, total = None, 0.0
        plan = self.plan()
        for r, adds_point in enumerate(plan):
            if r == 0:
                coords = torch.cat([coords, first[:, None]], 1)
                labels = torch.cat([labels, torch.ones(n, 1, dtype=torch.long, device=device)], 1)
            elif adds_point:
                new, positive = error_points(prev > 0, gt)
                coords = torch.cat([coords, ((new.float() + 0.5) * scale - 0.5)[:, None]], 1)
                labels = torch.cat([labels, positive.long()[:, None]], 1)
            logits, iou, chosen = self.decode(emb, coords, labels, noisy, use_box, prev, multimask=r == 0)
            total = total + self.round_loss(logits, iou, gt)
            prev = chosen.detach()
        return total / len(plan)

    def step(self) -> Tensor:
        images, targets = next(self.batches)
        with self.ctx:
            embeddings = self.net.encode(images)
            loss = self.rounds(embeddings, images, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.family.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        return loss.detach()

    def timed_step(self) -> dict[str, float]:
        """:meth:`step` split in phases (seconds): encoder forward, rounds forward, rounds backward
        (to the image embeddings), encoder backward, optimizer (clip, step, schedule, zero_grad)."""
        device = self.family.device
        marks = [now(device)]
        images, targets = next(self.batches)
        with self.ctx:
            embeddings = self.net.encode(images)
            marks.append(now(device))
            leaf = embeddings.detach().requires_grad_()
            loss = self.rounds(leaf, images, targets)
        marks.append(now(device))
        loss.backward()
        marks.append(now(device))
        embeddings.backward(leaf.grad)
        marks.append(now(device))
        torch.nn.utils.clip_grad_norm_(self.params, self.family.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        marks.append(now(device))
        names = ("encoder forward", "rounds forward", "rounds backward", "encoder backward", "optimizer")
        return {name: b - a for name, a, b in zip(names, marks[:-1], marks[1:], strict=True)}


def phases(family: SAMFamily, steps: int) -> dict[str, float]:
    """Median seconds of each phase of the plain step over ``steps`` steps (after one warm-up)."""
    restore_rng(seeded_state(0))
    loop = family.plain(copy.deepcopy(family.template()), family.batches(), steps + 1)
    loop.timed_step()
    runs = [loop.timed_step() for _ in range(steps)]
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


CPU_FAMILY = SAMFamily(
    "sam_tiny (encoder 192 wide, 6 deep, patch 4), shapes 64 px, batch 4 (1-3 objects each), 11 rounds, fp32"
)
CPU_SPEC = Spec(steps=24, warmup=4, repeats=3)
TINY = {
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": (1,),
}


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    family, spec, phase_steps = CPU_FAMILY, CPU_SPEC, 10
    if args.quick:
        family = replace(
            family,
            label="tiny SAM (quick)",
            image_size=32,
            batch=2,
            num_rounds=3,
            mask_only_rounds=1,
            net_kwargs=TINY,
        )
        spec, phase_steps = Spec(6, 2, 2), 2
    result = lockstep(family, spec)
    print(f"    {family.label}; AdamW + warmup_cosine, grad clip 1.0, CPU")
    print(
        "    vitrain = Lightning Trainer fitting SegmentationTask; plain = a hand-written loop of the same prompt rounds"
    )
    print("    (the same network calls and loss helpers), its own random stream seeded as vitrain's")
    print_side_by_side(result, spec)
    split = phases(family, phase_steps)
    total = sum(split.values())
    print(f"    where the plain step goes (median of {phase_steps} steps, {total * 1000:.1f} ms): "
          + ", ".join(f"{name} {seconds / total * 100:.1f}%" for name, seconds in split.items()))  # fmt: skip
    rounds = (split["rounds forward"] + split["rounds backward"]) / total
    print(f"    prompt rounds (forward + backward) = {rounds * 100:.1f}% of the step")
    return [
        Ratio("sam", result.ratio, "SAM interactive step: vitrain / plain loop of the same rounds", STEP_GOAL)
    ]


if __name__ == "__main__":
    main()
