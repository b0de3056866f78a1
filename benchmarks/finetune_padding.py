"""Fine-tuning samples/s: batches padded to their longest sequence against batches padded to max_length.

Both sides train the same BERT classifier (``create_bert_classifier``, the same initial weights) on
the same batches of the embedded classification task (``data=text_classification``: CPython help
topics, a trained WordPiece tokenizer, ``max_length`` 128), in the same order; the only
difference is the collate function: :class:`vitrain.data.finetune.PadCollate` pads each batch to
its longest sequence (vitrain's default) or to ``max_length`` (``pad_to``, what a fixed-shape
pipeline does). The sides alternate in rounds and each side's samples/s is the median of its
rounds, so a drifting machine moves both alike. Prints the ratio (> 1: per-batch padding is
faster) and the mean padded length of each side.

The examples are the first sentence of each help passage (GLUE-like lengths: single sentences and
short pairs, where most of a 128-token batch is padding); ``--passages`` uses the whole passages
(paragraphs, often near 128 tokens: there per-batch padding saves little).

    python -m benchmarks.finetune_padding [--quick] [--passages]
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import Ratio, module_args
from vitrain.data.finetune import PadCollate
from vitrain.data.text import sentences
from vitrain.data.text_classification import TextClassificationDataModule, help_topic_passages
from vitrain.models import create_bert_classifier

TITLE = "fine-tuning (BERT classifier): per-batch padding against padding to max_length"


def first_sentences(path: Path) -> Path:
    """``path``: a CSV of the first sentence of every embedded help passage and its topic."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((sentences(p.text)[0], p.label) for p in help_topic_passages())
    return path


def batches(dataset, collate: PadCollate, batch: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` batches of a fixed random order of ``dataset``, collated by ``collate``."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    order = (order * (batch * count // len(order) + 1))[: batch * count]
    return [collate([dataset[i] for i in order[k * batch : (k + 1) * batch]]) for k in range(count)]


def train_rate(net, optimizer, data: list[dict]) -> float:
    """Samples per second of training steps (forward, cross-entropy, backward, AdamW) over ``data``."""
    start = time.perf_counter()
    for batch in data:
        logits = net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = F.cross_entropy(logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return sum(len(b["labels"]) for b in data) / (time.perf_counter() - start)


def _arguments(parser) -> None:
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passages", action="store_true", help="whole passages instead of first sentences")


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, TITLE, _arguments)
    quick = args.quick
    max_length, batch, steps = (64, 8, 2) if quick else (128, 32, 8)
    net_args = dict(n_layer=1, n_embd=32, n_head=2) if quick else {}
    with tempfile.TemporaryDirectory() as cache:
        train = None if args.passages else str(first_sentences(Path(cache) / "sentences.csv"))
        vocab = 1000 if quick else 4096
        data = TextClassificationDataModule(
            "masked", train=train, max_length=max_length, vocab_size=vocab, cache_dir=cache, test_fraction=0
        )
        data.setup()
        pad = data.special_ids["pad"]
        sides = {
            "per-batch": batches(data.train_set, PadCollate(pad), batch, steps),
            "max_length": batches(data.train_set, PadCollate(pad, pad_to=max_length), batch, steps),
        }
        torch.manual_seed(0)
        net = create_bert_classifier(
            "bert_tiny", num_labels=len(data.classes), vocab_size=data.vocab_size, **net_args
        )
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(1 if quick else args.rounds):
        for side, side_batches in sides.items():
            net.load_state_dict(initial)
            optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
            train_rate(net, optimizer, side_batches[:1])  # warm-up step, not timed
            rates[side].append(train_rate(net, optimizer, side_batches))
    per_batch, fixed = (statistics.median(rates[s]) for s in sides)
    lengths = {s: statistics.mean(b["input_ids"].shape[1] for b in sides[s]) for s in sides}
    what = "whole passages" if args.passages else "first sentences"
    size = " (quick: 1 layer, 32 wide)" if quick else ""
    rounds = len(rates["per-batch"])
    print(
        f"    bert_tiny{size} on the help passages' {what}, batch {batch}, max_length {max_length}, {steps} steps x {rounds} rounds"
    )
    print(f"    per-batch padding: {per_batch:.1f} samples/s (mean padded length {lengths['per-batch']:.1f})")
    print(f"    padding to max_length: {fixed:.1f} samples/s (length {lengths['max_length']:.0f})")
    ratio = per_batch / fixed
    print(f"    per-batch padding / max_length padding samples/s = {ratio:.3f}")
    return [
        Ratio(
            "finetune_padding", ratio, f"BERT fine-tuning samples/s, per-batch / max_length padding ({what})"
        )
    ]


if __name__ == "__main__":
    main()
