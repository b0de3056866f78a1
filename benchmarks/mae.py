"""MAE pretraining: the vitrain training step against facebookresearch/mae's loop, and the masked
step against a full-token step of the same encoder (the paper's ~3x).

1. vitrain = a Lightning ``Trainer`` fitting ``MAETask``; plain = the loop of
   facebookresearch/mae ``engine_pretrain.py`` (learning rate set per iteration on every group
   by hand, ``loss, _, _ = model(samples, mask_ratio)``, backward, ``optimizer.step()``,
   ``zero_grad()``) with the reference's parameter groups (``timm.optim.add_weight_decay``: no
   decay on biases and 1-d parameters, the frozen position tables left out). Same initial
   weights, images, AdamW (betas 0.9/0.95) and vitrain's ``warmup_cosine`` factor; each side
   draws its masks from its own copy of one random stream, so both end with the same weights.
   Left out of the plain loop as logging only: the reference's ``loss.item()``, its
   ``NativeScaler`` gradient norm and ``torch.cuda.synchronize()`` each step.
2. MAE ViT-L/16 at 224 px, batch 4: forward + backward of the MAE at mask ratio 0.75 (encoder on
   the visible quarter, 8-block decoder, loss) against a forward + backward of the same encoder
   on all patches; alternating, medians. The FLOP ratio of the two is printed beside it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import nn

from benchmarks.common import STEP_GOAL, Ratio, Spec, lockstep, module_args, print_side_by_side, step_loader
from vitrain.callbacks.throughput import flop_counter
from vitrain.models import create_mae
from vitrain.tasks import MAETask
from vitrain.tasks.optim import lr_factor, to_steps, warmup_cosine

TITLE = "MAE pretraining: vitrain step against facebookresearch/mae's loop; masked step against full tokens"


@dataclass
class MAEFamily:
    """An MAE on random images: both sides of the side-by-side (see ``Family``)."""

    label: str
    name: str = "mae_vit_tiny"
    image_size: int = 32
    batch: int = 64
    device: str = "cpu"
    bf16: bool = False
    net_kwargs: dict = field(default_factory=dict)
    lr: float = 1.5e-4 * 64 / 256  # the paper's base lr x batch / 256
    weight_decay: float = 0.05
    warmup_epochs: float = 0.1
    unique: int = 4
    trainer_kwargs: dict = field(default_factory=dict)  # no gradient clipping (the reference has none)

    def template(self) -> nn.Module:
        torch.manual_seed(0)
        return create_mae(self.name, img_size=self.image_size, norm_pix_loss=True, **self.net_kwargs).to(
            self.device
        )

    def batches(self) -> list:
        gen = torch.Generator().manual_seed(0)
        size = (self.batch, 3, self.image_size, self.image_size)
        return [
            (
                torch.randn(size, generator=gen).to(self.device),
                torch.zeros(self.batch, dtype=torch.long).to(self.device),
            )
            for _ in range(self.unique)
        ]

    def optimizer(self):
        return partial(torch.optim.AdamW, lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)

    def task(self, net: nn.Module) -> MAETask:
        scheduler = partial(warmup_cosine, warmup_epochs=self.warmup_epochs, min_lr_ratio=0.0)
        return MAETask(net, optimizer=self.optimizer(), scheduler=scheduler)

    def plain(self, net: nn.Module, batches: list, steps: int) -> MAELoop:
        return MAELoop(net, batches, steps, self)


def add_weight_decay(net: nn.Module, weight_decay: float) -> list[dict]:
    """timm's ``add_weight_decay`` as facebookresearch/mae ``main_pretrain.py`` calls it: no decay
    on 1-d parameters and biases, frozen parameters left out; ``[no_decay, decay]``."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class MAELoop:
    """facebookresearch/mae ``engine_pretrain.train_one_epoch`` (no accumulation)."""

    def __init__(self, net: nn.Module, batches: list, steps: int, family: MAEFamily) -> None:
        self.family = family
        self.net = net.train()
        self.optimizer = family.optimizer()(add_weight_decay(net, family.weight_decay))
        warmup = min(to_steps(family.warmup_epochs, steps), steps - 1)
        self.factor = lr_factor(steps, warmup, 0.0, "cosine")
        self.batches = iter(step_loader(batches, steps))
        self.ctx = torch.autocast(torch.device(family.device).type, dtype=torch.bfloat16, enabled=family.bf16)
        self.index = 0

    def step(self) -> torch.Tensor:
        samples, _ = next(self.batches)
        lr = self.family.lr * self.factor(self.index)  # lr_sched.adjust_learning_rate, per iteration
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with self.ctx:
            loss, _, _ = self.net(samples, mask_ratio=self.net.mask_ratio)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.index += 1
        return loss.detach()


# ---------------------------------------------------------------------------- masked vs full tokens
def masked_vs_full(name: str, img_size: int, batch: int, reps: int, **overrides) -> dict:
    """MAE pretraining step (mask 0.75: encoder on the visible quarter + light decoder) against a
    full-token forward + backward of the same encoder; alternating, medians of ``reps`` each;
    and the FLOP ratio of the two (``FlopCounterMode``)."""
    torch.manual_seed(0)
    net = create_mae(name, img_size=img_size, mask_ratio=0.75, **overrides)
    images = torch.randn(batch, 3, img_size, img_size)

    def masked() -> None:
        loss, _, _ = net(images)
        loss.backward()

    def full_tokens() -> None:
        latent, _, _ = net.forward_encoder(images, mask_ratio=0.0)
        latent.float().pow(2).mean().backward()

    flops = {}
    for key, fn in (("masked", masked), ("full", full_tokens)):  # warm-up, counting the FLOPs
        with flop_counter() as counter:
            fn()
        flops[key] = counter.get_total_flops()
        net.zero_grad(set_to_none=True)
    times: dict[str, list[float]] = {"masked": [], "full": []}
    for rep in range(reps):
        order = (("masked", masked), ("full", full_tokens))
        for key, fn in order if rep % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
            net.zero_grad(set_to_none=True)
    masked_s, full_s = statistics.median(times["masked"]), statistics.median(times["full"])
    return {
        "masked_ms": masked_s * 1000,
        "full_ms": full_s * 1000,
        "speedup": full_s / masked_s,
        "flop_ratio": flops["full"] / flops["masked"],
    }


CPU_FAMILY = MAEFamily(
    "mae_vit_tiny (encoder 192 wide, 6 deep; decoder 128 wide, 2 deep), 32 px, batch 64, fp32"
)
CPU_SPEC = Spec(steps=40, warmup=5, repeats=3)
TINY = {
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
FLOP_RATIO_GOAL = ">= 2.8"


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    family, spec = CPU_FAMILY, CPU_SPEC
    ratio_spec = dict(name="mae_vit_l16", img_size=224, batch=4, reps=3)
    if args.quick:
        family = replace(family, label="tiny MAE (quick)", batch=8, net_kwargs=TINY)
        spec = Spec(6, 2, 2)
        ratio_spec = dict(name="mae_vit_tiny", img_size=32, batch=4, reps=2)
    result = lockstep(family, spec)
    print(f"    {family.label}; mask 0.75, norm_pix_loss, AdamW (betas 0.9/0.95) + warmup_cosine, CPU")
    print(
        "    vitrain = Lightning Trainer fitting MAETask; plain = facebookresearch/mae engine_pretrain.py's loop"
    )
    print("    (lr set per iteration, forward, backward, step, zero_grad) with its parameter groups")
    print_side_by_side(result, spec)

    mae = masked_vs_full(**ratio_spec)
    print()
    print(f"    masked vs full tokens: {ratio_spec['name']} at {ratio_spec['img_size']} px, batch {ratio_spec['batch']}, "
          f"fp32, CPU; median of {ratio_spec['reps']} alternating steps each")  # fmt: skip
    print(
        "    masked = forward + backward of the MAE at mask ratio 0.75 (encoder on visible patches, decoder,"
    )
    print("    loss); full = forward + backward of the same encoder on all patches (no decoder)")
    print(f"    masked {mae['masked_ms']:.0f} ms/step, full tokens {mae['full_ms']:.0f} ms/step; "
          f"FLOP ratio full / masked {mae['flop_ratio']:.2f}")  # fmt: skip
    print(f"    full-token step / MAE step = {mae['speedup']:.2f}x (paper: about 3x; goal {FLOP_RATIO_GOAL})")
    return [
        Ratio("mae", result.ratio, "MAE step: vitrain / facebookresearch/mae loop", STEP_GOAL),
        Ratio(
            "mae_full/masked",
            mae["speedup"],
            f"{ratio_spec['name']} full-token / masked step time",
            FLOP_RATIO_GOAL,
        ),
    ]


if __name__ == "__main__":
    main()
