"""BERT (masked LM): the vitrain training step against a plain loop.

vitrain = a Lightning ``Trainer`` fitting ``MaskedLMTask``; plain = a hand-written loop in the
shape of Hugging Face's ``run_mlm_no_trainer.py`` (the PyTorch reference for BERT pretraining;
google-research/bert is TensorFlow): mask the batch (80/10/10 of 15% of the non-special
tokens), forward, cross-entropy on the selected tokens, backward, clip, ``optimizer.step()``,
``scheduler.step()``, ``zero_grad()``. Same initial weights, padded sentence batches, AdamW
groups (no decay on biases and LayerNorms, as BERT's ``exclude_from_weight_decay``),
``warmup_linear`` schedule, and the same masks: each step's masks are drawn from the seed the
task derives from ``(mask_seed, epoch, batch, rank)``, so both sides end with the same weights
(dropout 0.1 draws from each side's own copy of one random stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import STEP_GOAL, Ratio, Spec, lockstep, module_args, print_side_by_side, step_loader
from vitrain.models import create_bert
from vitrain.tasks import MaskedLMTask, language
from vitrain.tasks.language import IGNORE_INDEX, mask_tokens
from vitrain.tasks.optim import param_groups, warmup_linear

TITLE = "training step, BERT (masked LM): vitrain against a plain loop"
SPECIAL = {"pad": 0, "cls": 1, "sep": 2, "mask": 3, "unk": 4}


@dataclass
class BERTFamily:
    """A BERT on random padded sentence batches (``input_ids``, ``token_type_ids``,
    ``attention_mask``, lengths between 3/4 of ``seq_len`` and ``seq_len``): both sides."""

    label: str
    name: str = "bert_tiny"
    vocab: int = 4096
    seq_len: int = 128
    batch: int = 16
    device: str = "cpu"
    bf16: bool = False
    net_kwargs: dict = field(default_factory=dict)
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_epochs: float = 0.1
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    mask_seed: int = 0
    unique: int = 4

    @property
    def trainer_kwargs(self) -> dict:
        return {"gradient_clip_val": self.grad_clip}

    def template(self) -> nn.Module:
        torch.manual_seed(0)
        return create_bert(self.name, vocab_size=self.vocab, dropout=0.1, **self.net_kwargs).to(self.device)

    def batches(self) -> list:
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(self.unique):
            lengths = torch.randint(self.seq_len * 3 // 4, self.seq_len + 1, (self.batch,), generator=gen)
            ids = torch.randint(len(SPECIAL), self.vocab, (self.batch, self.seq_len), generator=gen)
            ids[:, 0] = SPECIAL["cls"]
            real = torch.arange(self.seq_len)[None] < lengths[:, None]
            ids = ids.masked_fill(~real, SPECIAL["pad"])
            ids[torch.arange(self.batch), lengths - 1] = SPECIAL["sep"]
            batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": real}
            out.append({k: v.to(self.device) for k, v in batch.items()})
        return out

    def optimizer(self):
        return partial(torch.optim.AdamW, lr=self.lr, weight_decay=self.weight_decay)

    def scheduler(self):
        return partial(warmup_linear, warmup_epochs=self.warmup_epochs, min_lr_ratio=0.0)

    def task(self, net: nn.Module) -> MaskedLMTask:
        task = MaskedLMTask(
            net, self.optimizer(), self.scheduler(), mask_prob=self.mask_prob, mask_seed=self.mask_seed
        )
        task.special_ids = dict(SPECIAL)  # what setup() takes from the data's tokenizer
        return task

    def plain(self, net: nn.Module, batches: list, steps: int) -> MLMLoop:
        return MLMLoop(net, batches, steps, self)


def task_mask_seed(mask_seed: int, epoch: int, batch: int, rank: int) -> int:
    """The seed ``MaskedLMTask.training_step`` draws a training batch's masks from.

    ``vitrain.seeding.derive_seed`` (issue 26) replaces the task's ``hash(tuple)``; this follows
    whichever the task module uses, so the weight check holds on both sides of that change.
    """
    derive_seed = getattr(language, "derive_seed", None)
    if derive_seed is None:
        return hash((mask_seed, epoch, batch, rank)) % 2**62
    return derive_seed(mask_seed, epoch, batch, rank, stream="mlm masks")


class MLMLoop:
    """A plain masked-LM loop (Hugging Face ``run_mlm_no_trainer.py``'s order: forward, backward,
    clip, optimizer step, schedule step, zero_grad)."""

    def __init__(self, net: nn.Module, batches: list, steps: int, family: BERTFamily) -> None:
        self.family = family
        self.net = net.train()
        self.optimizer = family.optimizer()(param_groups(net))
        self.schedule = family.scheduler()(self.optimizer, total_steps=steps, steps_per_epoch=steps)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.batches = iter(step_loader(batches, steps))
        special = [SPECIAL[k] for k in ("pad", "cls", "sep", "mask")]
        self.special = torch.tensor(special, device=family.device)
        self.ctx = torch.autocast(torch.device(family.device).type, dtype=torch.bfloat16, enabled=family.bf16)
        self.index = 0

    def step(self) -> torch.Tensor:
        batch = next(self.batches)
        ids = batch["input_ids"]
        seed = task_mask_seed(self.family.mask_seed, 0, self.index, 0)  # the same masks as the task
        generator = torch.Generator(device=ids.device).manual_seed(seed)
        inputs, labels = mask_tokens(
            ids,
            torch.isin(ids, self.special),
            self.net.vocab_size,
            SPECIAL["mask"],
            generator,
            self.family.mask_prob,
        )
        selected = labels != IGNORE_INDEX
        with self.ctx:
            logits, _ = self.net(inputs, batch["token_type_ids"], batch["attention_mask"], selected)
            losses = F.cross_entropy(logits.float(), labels[selected], reduction="none")
            loss = losses.sum() / max(losses.numel(), 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.family.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        self.index += 1
        return loss.detach()


CPU_FAMILY = BERTFamily(
    "bert_tiny (4 layers, 128 wide), sequences of 96-128 tokens, batch 16, vocabulary 4096, fp32"
)
CPU_SPEC = Spec(steps=40, warmup=5, repeats=3)
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    family, spec = CPU_FAMILY, CPU_SPEC
    if args.quick:
        family = replace(family, label="tiny BERT (quick)", vocab=128, seq_len=32, batch=4, net_kwargs=TINY)
        spec = Spec(6, 2, 2)
    result = lockstep(family, spec)
    print(
        f"    {family.label}; 15% masking (80/10/10), dropout 0.1, AdamW + warmup_linear, grad clip 1.0, CPU"
    )
    print(
        "    vitrain = Lightning Trainer fitting MaskedLMTask; plain = mask, forward, loss on the selected tokens,"
    )
    print("    backward, clip, step, schedule, zero_grad (run_mlm_no_trainer.py's order), the same masks")
    print_side_by_side(result, spec)
    return [Ratio("bert", result.ratio, "BERT MLM step: vitrain / plain loop", STEP_GOAL)]


if __name__ == "__main__":
    main()
