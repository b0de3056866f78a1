"""Image classification (ViT): the vitrain training step against a hand-written loop.

vitrain = a Lightning ``Trainer`` fitting ``ClassificationTask``; plain = a hand-written loop on
the same network, initial weights, batches, AdamW groups and ``warmup_cosine`` schedule. Both
end with the same weights, which the bench checks. On CPU a plain step runs just before or
after every vitrain step (:func:`benchmarks.common.lockstep`); on a GPU whole runs alternate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import nn

from benchmarks.common import (
    STEP_GOAL,
    Ratio,
    Spec,
    fmt_ratios,
    lockstep,
    module_args,
    noise_floor,
    print_side_by_side,
    step_loader,
)
from vitrain.callbacks.throughput import flop_counter
from vitrain.models import create_vit
from vitrain.tasks import ClassificationTask
from vitrain.tasks.optim import param_groups, warmup_cosine

TITLE = "training step, image classification (ViT): vitrain against a hand-written loop"
LR, WEIGHT_DECAY, WARMUP_EPOCHS, MIN_LR_RATIO = 1e-3, 0.05, 0.25, 0.01


@dataclass
class ViTFamily:
    """A ViT classifier on random images: both sides of the side-by-side (see ``Family``)."""

    label: str
    model: str = "vit_tiny_patch16_224"
    image_size: int = 32
    batch: int = 32
    device: str = "cpu"
    bf16: bool = False
    net_kwargs: dict = field(default_factory=dict)
    unique: int = 4  # distinct batches, cycled
    trainer_kwargs: dict = field(default_factory=dict)

    def template(self) -> nn.Module:
        torch.manual_seed(0)
        return create_vit(
            self.model, img_size=self.image_size, num_classes=10, drop_path_rate=0.0, **self.net_kwargs
        ).to(self.device)

    def batches(self) -> list:
        gen = torch.Generator().manual_seed(0)
        size = (self.batch, 3, self.image_size, self.image_size)
        return [
            (
                torch.randn(size, generator=gen).to(self.device),
                torch.randint(0, 10, (self.batch,), generator=gen).to(self.device),
            )
            for _ in range(self.unique)
        ]

    def task(self, net: nn.Module) -> ClassificationTask:
        return ClassificationTask(
            net,
            optimizer=partial(torch.optim.AdamW, lr=LR, weight_decay=WEIGHT_DECAY),
            scheduler=partial(warmup_cosine, warmup_epochs=WARMUP_EPOCHS, min_lr_ratio=MIN_LR_RATIO),
        )

    def plain(self, net: nn.Module, batches: list, steps: int) -> PlainLoop:
        return PlainLoop(net, batches, steps, self)

    def training_flops(self) -> int:
        """FLOPs of one training forward + backward of a batch (matmuls, convolutions, attention)."""
        net = self.template().train()
        images, labels = self.batches()[0]
        with flop_counter() as counter:
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = nn.functional.cross_entropy(net(images), labels)
            loss.backward()
        return counter.get_total_flops()


class PlainLoop:
    """The hand-written side: the network, AdamW groups, schedule and batches of the task."""

    def __init__(self, net: nn.Module, batches: list, steps: int, family: ViTFamily) -> None:
        self.device, self.bf16 = torch.device(family.device), family.bf16
        self.net = net.to(self.device).train()
        self.optimizer = torch.optim.AdamW(param_groups(self.net), lr=LR, weight_decay=WEIGHT_DECAY)
        # Lightning with max_steps and no max_epochs: one "epoch" of all steps (see configure_optimizers)
        self.schedule = warmup_cosine(
            self.optimizer, steps, steps, warmup_epochs=WARMUP_EPOCHS, min_lr_ratio=MIN_LR_RATIO
        )
        self.criterion = nn.CrossEntropyLoss()
        self.batches = iter(step_loader(batches, steps))

    def step(self) -> torch.Tensor:
        images, labels = next(self.batches)
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.criterion(self.net(images), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.schedule.step()
        return loss.detach()


CPU_FAMILY = ViTFamily("ViT-Ti/16, 32 px, batch 32, fp32")
CPU_SPEC = Spec(steps=60, warmup=6, repeats=3)
TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    family, spec = CPU_FAMILY, CPU_SPEC
    if args.quick:
        family, spec = replace(family, label="tiny ViT (quick)", net_kwargs=TINY), Spec(6, 2, 2)
    result = lockstep(family, spec)
    print(f"    {family.label}, AdamW + warmup_cosine, CPU")
    print(
        "    vitrain = Lightning Trainer fitting ClassificationTask; plain = a hand-written loop on the same"
    )
    print("    network, initial weights, batches, optimizer groups and schedule")
    print_side_by_side(result, spec)
    floor, per_fit = noise_floor(family, spec)
    print(
        "    the resolution of these ratios here and now: the plain loop against a copy of itself, paired the same"
    )
    print(f"    way = {floor:.3f} (per fit: {fmt_ratios(per_fit)}; ideally 1.000)")
    return [
        Ratio("classification", result.ratio, "ViT step: vitrain / hand-written loop", STEP_GOAL),
        Ratio(
            "plain/plain", floor, "the plain ViT loop against itself, paired the same way: the noise floor"
        ),
    ]


if __name__ == "__main__":
    main()
