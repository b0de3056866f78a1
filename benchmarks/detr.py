"""DETR: the vitrain training step against facebookresearch/detr's loop; where the step goes
(Hungarian matching); the matcher against ``scipy.optimize.linear_sum_assignment`` alone and
against the reference's batched cost computation, on the same cost matrices.

1. vitrain = a Lightning ``Trainer`` fitting ``DetectionTask``; plain = facebookresearch/detr
   ``engine.py`` ``train_one_epoch``: images and targets to the device, ``outputs =
   model(samples)``, the set criterion (the same ``HungarianMatcher`` and ``SetCriterion``, with
   the auxiliary decoder losses), ``zero_grad()``, backward, gradient clipping at 0.1,
   ``optimizer.step()``, and the reference's parameter groups (``main.py``: the backbone at its
   own lr, weight decay on every parameter) with ``StepLR``. Same initial weights, batches of
   the embedded shapes data, AdamW and schedule (a drop at half the run, stepped per step), so
   both sides end with the same weights. Left out of the plain loop as logging only: the
   reference's ``reduce_dict``, ``loss.item()`` and metric logger each step.
2. The share of the vitrain step spent in the matcher (its ``forward``, once per decoder layer).
3. On the outputs of the network's decoder layers: vitrain's matcher (one cost matrix for the
   whole batch, moved to the host once, split per image: the reference's way, with finiteness
   checks), the per-image matcher it replaced (a cost matrix per image, each moved on its own),
   the reference's matcher, and ``linear_sum_assignment`` alone on the per-image matrices.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert

from benchmarks.common import STEP_GOAL, Ratio, Spec, lockstep, module_args, print_side_by_side, step_loader
from vitrain.data.detection import collate_detection
from vitrain.data.shapes import ShapesDataModule
from vitrain.models import create_detr
from vitrain.models.box_ops import generalized_box_iou
from vitrain.models.matcher import HungarianMatcher
from vitrain.models.set_criterion import SetCriterion
from vitrain.tasks import DetectionTask
from vitrain.tasks.detection import without_crowd
from vitrain.tasks.optim import step_decay

TITLE = "DETR: vitrain step against facebookresearch/detr's loop; matching's share; the matcher against scipy"


@dataclass
class DETRFamily:
    """DETR on batches of the embedded shapes data (3 classes): both sides (see ``Family``)."""

    label: str
    name: str = "detr_tiny"
    image_size: int = 64
    batch: int = 16  # as experiment=detr_shapes
    device: str = "cpu"
    bf16: bool = False
    net_kwargs: dict = field(default_factory=dict)
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    unique: int = 4

    @property
    def trainer_kwargs(self) -> dict:
        return {"gradient_clip_val": self.grad_clip}

    def template(self) -> nn.Module:
        torch.manual_seed(0)
        return create_detr(self.name, num_classes=3, **self.net_kwargs).to(self.device)

    def batches(self) -> list:
        data = ShapesDataModule(
            image_size=self.image_size,
            train_size=self.batch * self.unique,
            val_size=1,
            test_size=0,
            batch_size=self.batch,
        )
        data.setup("fit")
        torch.manual_seed(0)  # the random flips
        samples = [data.train_set[i] for i in range(self.batch * self.unique)]
        out = []
        for start in range(0, len(samples), self.batch):
            images, mask, targets = collate_detection(samples[start : start + self.batch])
            out.append((images.to(self.device), mask.to(self.device), targets))  # targets stay on the CPU
        return out

    def optimizer(self):
        return partial(torch.optim.AdamW, lr=self.lr, weight_decay=self.weight_decay)

    def task(self, net: nn.Module) -> DetectionTask:
        scheduler = partial(step_decay, drop_epochs=[0.5], gamma=0.1)
        return DetectionTask(net, self.optimizer(), scheduler, backbone_lr=self.backbone_lr, decay_1d=True)

    def plain(self, net: nn.Module, batches: list, steps: int) -> DETRLoop:
        return DETRLoop(net, batches, steps, self)


def detr_groups(net: nn.Module, backbone_lr: float) -> list[dict]:
    """facebookresearch/detr ``main.py``'s parameter groups: the rest, then the backbone at its lr."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if "backbone" not in n]},
        {"params": [p for n, p in named if "backbone" in n], "lr": backbone_lr},
    ]


class DETRLoop:
    """facebookresearch/detr ``engine.train_one_epoch`` with its criterion and schedule."""

    def __init__(self, net: nn.Module, batches: list, steps: int, family: DETRFamily) -> None:
        self.device = torch.device(family.device)
        self.net = net.train()
        matcher = HungarianMatcher(1.0, 5.0, 2.0)
        self.criterion = SetCriterion(3, matcher, 0.1, 1.0, 5.0, 2.0).to(self.device).train()
        self.optimizer = family.optimizer()(detr_groups(net, family.backbone_lr))
        self.schedule = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=round(0.5 * steps), gamma=0.1
        )
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.grad_clip = family.grad_clip
        self.batches = iter(step_loader(batches, steps))
        self.ctx = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=family.bf16)

    def step(self) -> torch.Tensor:
        images, mask, targets = next(self.batches)
        images, mask = images.to(self.device), mask.to(self.device)
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        with self.ctx:
            outputs = self.net(images, mask)
        loss, _ = self.criterion(outputs, without_crowd(targets))
        self.optimizer.zero_grad()
        loss.backward()
        # the optimizer's parameters in its group order, as Lightning clips them (the reference
        # passes model.parameters(): the same set, the norm summed in another order)
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return loss.detach()


# ---------------------------------------------------------------------------- where the step goes
class Stopwatch:
    """Seconds spent inside a module's ``forward`` (forward pre-hook and hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._exit)

    def _enter(self, module, args) -> None:
        self._start = time.perf_counter()

    def _exit(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def reference_match(matcher: HungarianMatcher, logits, boxes, targets) -> list:
    """facebookresearch/detr ``models/matcher.py``: one cost matrix for all queries of the batch
    against all its targets, moved to the CPU once, split per image, then
    ``linear_sum_assignment`` per image (no finiteness checks: a NaN fails inside scipy)."""
    with torch.no_grad():
        bs, num_queries = logits.shape[:2]
        out_prob = logits.flatten(0, 1).float().softmax(-1)
        out_bbox = boxes.flatten(0, 1).float()
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).float()
        cost = (
            matcher.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
            - matcher.cost_class * out_prob[:, tgt_ids]
        )
        giou = generalized_box_iou(
            box_convert(out_bbox, "cxcywh", "xyxy"), box_convert(tgt_bbox, "cxcywh", "xyxy")
        )
        cost = (cost - matcher.cost_giou * giou).view(bs, num_queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
    return [
        (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices
    ]


def per_image_match(matcher: HungarianMatcher, logits, boxes, targets) -> list:
    """vitrain's matcher before it batched the costs: a cost matrix per image (with its checks),
    each moved to the CPU on its own, then ``linear_sum_assignment``."""
    with torch.no_grad():
        probs, boxes = logits.float().softmax(-1), boxes.float()
        out = []
        for b, target in enumerate(targets):
            cost = matcher.cost_matrix(probs[b], boxes[b], target["labels"], target["boxes"].float())
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return out


def matcher_variants(family: DETRFamily, batches: list, reps: int) -> dict:
    """Milliseconds per matcher call (one decoder layer's outputs of a batch) of: vitrain's matcher,
    the per-image matcher it replaced, the reference's matcher, and ``linear_sum_assignment``
    alone on the per-image cost matrices; and whether all give the same assignments."""
    net = family.template().train()
    matcher = HungarianMatcher(1.0, 5.0, 2.0)
    cases = []
    with torch.no_grad():
        for images, mask, targets in batches:
            out = net(images, mask)
            targets = [{k: v.to(images.device) for k, v in t.items()} for t in without_crowd(targets)]
            for layer in [out, *out.get("aux_outputs", [])]:
                logits, boxes = layer["pred_logits"].float(), layer["pred_boxes"].float()
                probs = logits.softmax(-1)
                costs = [
                    matcher.cost_matrix(probs[b], boxes[b], t["labels"], t["boxes"].float()).cpu().numpy()
                    for b, t in enumerate(targets)
                ]
                cases.append((logits, boxes, targets, costs))
    runs = {
        "vitrain": lambda lg, bx, t, c: matcher(lg, bx, t),
        "per_image": lambda lg, bx, t, c: per_image_match(matcher, lg, bx, t),
        "reference": lambda lg, bx, t, c: reference_match(matcher, lg, bx, t),
        "scipy": lambda lg, bx, t, c: [linear_sum_assignment(m) for m in c],
    }
    same = True
    for case in cases:
        found = [runs[key](*case) for key in ("vitrain", "per_image", "reference")]
        same &= all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            for other in found[1:]
            for a, b in zip(found[0], other, strict=True)
        )
    times: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(reps + 1):
        for key, run in runs.items() if rep % 2 else reversed(runs.items()):
            start = time.perf_counter()
            for case in cases:
                run(*case)
            if family.device == "cuda":
                torch.cuda.synchronize()
            if rep:  # the first round warms up
                times[key].append((time.perf_counter() - start) / len(cases))
    return {
        "ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "same": same,
        "calls": len(cases),
    }


CPU_FAMILY = DETRFamily(
    "detr_tiny (resnet10t to stride 16, width 128, 2 + 2 layers, 10 queries), shapes 64 px, batch 16, fp32"
)
CPU_SPEC = Spec(steps=30, warmup=4, repeats=3)
TINY = {
    "hidden_dim": 32,
    "num_heads": 2,
    "num_encoder_layers": 1,
    "num_decoder_layers": 2,
    "dim_feedforward": 64,
}


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    family, spec, reps = CPU_FAMILY, CPU_SPEC, 20
    if args.quick:
        family = replace(family, label="tiny DETR (quick)", image_size=32, batch=2, net_kwargs=TINY)
        spec, reps = Spec(6, 2, 2), 2
    watches: dict[str, list[Stopwatch]] = {"vitrain": [], "plain": []}

    def attach(task, plain) -> None:
        watches["vitrain"].append(Stopwatch(task.criterion.matcher))
        watches["plain"].append(Stopwatch(plain.criterion.matcher))

    result = lockstep(family, spec, hooks=attach)
    print(
        f"    {family.label}; AdamW lr 1e-4 (backbone 1e-5), wd 1e-4 on every parameter, lr drop at half, clip 0.1"
    )
    print(
        "    vitrain = Lightning Trainer fitting DetectionTask; plain = facebookresearch/detr engine.py's loop with"
    )
    print(
        "    the same HungarianMatcher and SetCriterion (auxiliary losses), its parameter groups and StepLR"
    )
    print_side_by_side(result, spec)
    steps = spec.repeats * spec.steps
    match_ms = 1000 * sum(w.seconds for w in watches["vitrain"]) / steps
    calls = sum(w.calls for w in watches["vitrain"]) / steps
    print(f"    matching: {match_ms:.2f} ms per vitrain step ({calls:.0f} matcher calls: one per decoder layer) = "
          f"{match_ms / result.vitrain_ms * 100:.1f}% of the step")  # fmt: skip

    m = matcher_variants(family, family.batches(), reps)
    ms = m["ms"]
    print(
        f"    the matcher on the outputs of {m['calls']} decoder layers x batches (batch {family.batch}), ms per call:"
    )
    print(f"    vitrain (one cost matrix for the batch, one copy to the host, split) {ms['vitrain']:.3f}; "
          f"before (a cost matrix per image) {ms['per_image']:.3f}; reference (facebookresearch/detr) "
          f"{ms['reference']:.3f}; linear_sum_assignment alone {ms['scipy']:.3f}")  # fmt: skip
    print(f"    vitrain matcher / reference matcher = {ms['vitrain'] / ms['reference']:.3f}; per-image / batched "
          f"{ms['per_image'] / ms['vitrain']:.2f}x; linear_sum_assignment's share of vitrain's matcher "
          f"{ms['scipy'] / ms['vitrain'] * 100:.0f}%; same assignments: {'yes' if m['same'] else 'NO'}")  # fmt: skip
    return [
        Ratio("detr", result.ratio, "DETR step: vitrain / facebookresearch/detr loop", STEP_GOAL),
        Ratio(
            "detr_matcher",
            ms["vitrain"] / ms["reference"],
            "DETR matcher time per call: vitrain / facebookresearch/detr",
        ),
    ]


if __name__ == "__main__":
    main()
