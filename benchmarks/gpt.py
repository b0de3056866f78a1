"""GPT (causal LM): the vitrain training step against a nanoGPT-style loop.

vitrain = a Lightning ``Trainer`` fitting ``CausalLMTask``; plain = the loop of karpathy/nanoGPT
``train.py``: the learning rate of the step set on every group by hand, forward, backward,
gradient clipping, ``optimizer.step()``, ``zero_grad(set_to_none=True)``; parameter groups as
nanoGPT's ``configure_optimizers`` (decay on every tensor of 2+ dimensions). Same initial
weights, token batches, AdamW settings and schedule (vitrain's ``warmup_cosine`` factor;
nanoGPT's ``get_lr`` warms up as ``(it + 1) / (warmup_iters + 1)``, one step longer). The loss
is computed as the task does (per-token cross-entropy on float32 logits, then the mean:
nanoGPT's ``F.cross_entropy`` mean reduction gives the same value up to rounding), so both
sides end with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import STEP_GOAL, Ratio, Spec, lockstep, module_args, print_side_by_side, step_loader
from vitrain.models import create_gpt
from vitrain.tasks import CausalLMTask
from vitrain.tasks.optim import lr_factor, to_steps, warmup_cosine

TITLE = "training step, GPT (causal LM): vitrain against a nanoGPT-style loop"


@dataclass
class GPTFamily:
    """A GPT on random token blocks ``{"tokens": (B, T + 1)}``: both sides (see ``Family``)."""

    label: str
    name: str = "gpt_tiny"
    vocab: int = 2048
    context: int = 256
    batch: int = 8
    device: str = "cpu"
    bf16: bool = False
    fused: bool = False  # fused AdamW (CUDA; nanoGPT uses it when available)
    compile: bool = False  # torch.compile the network (both sides)
    compile_backend: str = "inductor"  # "eager": dynamo alone (the CPU smoke test of this path)
    net_kwargs: dict = field(default_factory=dict)
    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_epochs: float = 0.1  # of the run (a max_steps run is one schedule epoch)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    unique: int = 4

    @property
    def trainer_kwargs(self) -> dict:
        return {"gradient_clip_val": self.grad_clip}

    def template(self) -> nn.Module:
        torch.manual_seed(0)
        return create_gpt(self.name, vocab_size=self.vocab, dropout=0.0, **self.net_kwargs).to(self.device)

    def batches(self) -> list:
        gen = torch.Generator().manual_seed(0)
        shape = (self.batch, self.context + 1)
        return [
            {"tokens": torch.randint(0, self.vocab, shape, generator=gen).to(self.device)}
            for _ in range(self.unique)
        ]

    def optimizer(self):
        return partial(
            torch.optim.AdamW, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
            **({"fused": True} if self.fused else {}),
        )  # fmt: skip

    def task(self, net: nn.Module) -> CausalLMTask:
        if self.compile:  # as vitrain.run does with compile=true: in place
            net.compile(backend=self.compile_backend)
        scheduler = partial(warmup_cosine, warmup_epochs=self.warmup_epochs, min_lr_ratio=self.min_lr_ratio)
        return CausalLMTask(net, optimizer=self.optimizer(), scheduler=scheduler)

    def plain(self, net: nn.Module, batches: list, steps: int) -> NanoGPTLoop:
        return NanoGPTLoop(net, batches, steps, self)


def nanogpt_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT ``configure_optimizers``: weight decay on every parameter of 2+ dimensions."""
    params = [p for p in net.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


class NanoGPTLoop:
    """karpathy/nanoGPT ``train.py``'s loop (one micro-step per step, no gradient accumulation)."""

    def __init__(self, net: nn.Module, batches: list, steps: int, family: GPTFamily) -> None:
        self.family = family
        self.net = net.train()
        self.model = torch.compile(net, backend=family.compile_backend) if family.compile else net
        self.optimizer = family.optimizer()(nanogpt_groups(net, family.weight_decay))
        warmup = min(to_steps(family.warmup_epochs, steps), steps - 1)
        self.get_lr = lr_factor(steps, warmup, family.min_lr_ratio, "cosine")
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.batches = iter(step_loader(batches, steps))
        self.iter_num = 0
        self.ctx = torch.autocast(torch.device(family.device).type, dtype=torch.bfloat16, enabled=family.bf16)

    def step(self) -> torch.Tensor:
        tokens = next(self.batches)["tokens"]
        x, y = tokens[:, :-1], tokens[:, 1:]
        lr = self.family.lr * self.get_lr(self.iter_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.ctx:
            logits = self.model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").mean()
        loss.backward()
        if self.family.grad_clip:
            # the optimizer's parameters in its group order, as Lightning clips them: the same
            # norm to the last bit (nanoGPT passes model.parameters(), the same set)
            torch.nn.utils.clip_grad_norm_(self.params, self.family.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter_num += 1
        return loss.detach()


CPU_FAMILY = GPTFamily("gpt_tiny (4 layers, 128 wide), context 256, batch 8, vocabulary 2048, fp32")
CPU_SPEC = Spec(steps=40, warmup=5, repeats=3)
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    family, spec = CPU_FAMILY, CPU_SPEC
    if args.quick:
        family = replace(family, label="tiny GPT (quick)", vocab=128, context=32, batch=2, net_kwargs=TINY)
        spec = Spec(6, 2, 2)
    result = lockstep(family, spec)
    print(f"    {family.label}; AdamW (betas 0.9/0.95, wd 0.1) + warmup_cosine, grad clip 1.0, CPU")
    print("    vitrain = Lightning Trainer fitting CausalLMTask; plain = nanoGPT train.py's loop (lr set per")
    print("    step by hand, clip, step, zero_grad(set_to_none)) with nanoGPT's parameter groups")
    print_side_by_side(result, spec)
    return [Ratio("gpt", result.ratio, "GPT step: vitrain / nanoGPT-style loop", STEP_GOAL)]


if __name__ == "__main__":
    main()
