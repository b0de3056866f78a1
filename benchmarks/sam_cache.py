"""SAM's image-embedding cache: training-step time with and without it.

1. ``sam_tiny`` measured: two ``SegmentationTask`` fits of the same network with its image
   encoder frozen, on the same embedded shapes data with masks (no flips), the cache on and off
   (off: the frozen encoder runs every step, without gradients). Both train two epochs; the steps
   of the second (the cache filled in the first) are timed, in alternating runs (A B B A ...), and
   the ratio is the median no-cache step over the median cached step.
2. ``sam_vit_b`` at 1024 px, by FLOPs (``FlopCounterMode`` on the meta device, nothing runs): a
   step without the cache costs the encoder's forward pass plus the prompt rounds (the decoder's
   forward and backward per object and round); with it, the rounds only. The ratio depends on
   how many objects and rounds a step decodes per image, so it is printed for the SAM paper's 64
   objects x 11 rounds, a few objects, and MedSAM's one box per image in one round.

``python -m benchmarks.sam_cache [--quick]`` (``--quick``: toy sizes, seconds).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from functools import partial

import lightning as L
import torch

from benchmarks.common import Ratio, module_args
from vitrain.callbacks.throughput import flop_counter
from vitrain.data.segmentation import ShapesMasksDataModule
from vitrain.models.sam_weights import create_sam
from vitrain.tasks.segmentation import SegmentationTask

TITLE = "SAM image-embedding cache: training step with and without it (sam_tiny measured, sam_vit_b by FLOPs)"

# (objects per image, prompting rounds): SAM's recipe (64 masks, 11 rounds), a few objects, MedSAM
# (bowang-lab/MedSAM train_one_gpu.py: one box per image, one pass)
DECODE_LOADS = ((64, 11), (8, 11), (1, 1))


class StepTimes(L.Callback):
    """Wall time of each training batch (its step included) of the last epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.times, self._start = epoch, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch:
            self.times.append(time.perf_counter() - self._start)


def timed_fit(cache: bool, sizes: dict, folder: str) -> tuple[list[float], SegmentationTask]:
    """Fit ``sam_tiny`` (encoder frozen) for two epochs; the step times of the second."""
    torch.manual_seed(0)
    net = create_sam("sam_tiny", image_size=sizes["image_size"])
    for p in net.image_encoder.parameters():
        p.requires_grad_(False)
    task = SegmentationTask(
        net, partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1), num_rounds=sizes["rounds"],
        mask_only_rounds=1, val_clicks=1, embedding_cache=cache, embedding_cache_dir=folder,
    )  # fmt: skip
    data = ShapesMasksDataModule(
        image_size=sizes["image_size"], train_size=sizes["train"], val_size=sizes["batch"], test_size=0,
        batch_size=sizes["batch"], hflip=False,
    )  # fmt: skip
    times = StepTimes(epoch=1)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[times], default_root_dir=folder,
    )  # fmt: skip
    trainer.fit(task, datamodule=data)
    return times.times, task


def measured(sizes: dict, repeats: int) -> float:
    """Median no-cache step / median cached step of ``sam_tiny``: ``repeats`` runs per side,
    alternating (A B B A ...)."""
    steps: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="sam-cache-bench-") as folder:
        order = ([True, False, False, True] * repeats)[: 2 * repeats]
        for i, cache in enumerate(order):
            times, task = timed_fit(cache, sizes, f"{folder}/{i}")
            steps[cache] += times
            if cache:
                assert task.cache is not None and task.cache.misses == sizes["train"] + sizes["batch"]
    cached, plain = statistics.median(steps[True]), statistics.median(steps[False])
    print(
        f"    sam_tiny {sizes['image_size']} px, batch {sizes['batch']}, {sizes['rounds']} rounds, encoder frozen: "
        f"step {plain * 1e3:.1f} ms without the cache, {cached * 1e3:.1f} ms with it ({len(steps[True])} steps each)"
    )
    ratio = plain / cached
    print(f"    sam_tiny: step without cache / step with cache = {ratio:.2f}x (measured)")
    return ratio


def decode_flops(net, embedding: torch.Tensor, objects: int) -> float:
    """FLOPs of one prompting round for ``objects`` objects of one image: the decoder's forward
    and backward (its weights train) with 2 points and a mask prompt."""
    emb = embedding.expand(objects, -1, -1, -1)
    low = net.low_res_size
    points = (torch.zeros(objects, 2, 2), torch.ones(objects, 2, dtype=torch.long))
    with flop_counter() as counter:
        logits, iou = net.decode(emb, points, None, torch.zeros(objects, 1, low, low))
        (logits.sum() + iou.sum()).backward()
    return counter.get_total_flops()


def by_flops(name: str = "sam_vit_b", image_size: int = 1024) -> list[tuple[int, int, float]]:
    """``[(objects, rounds, no-cache / cache FLOPs ratio), ...]`` for :data:`DECODE_LOADS`."""
    with torch.device("meta"):
        net = create_sam(name, image_size=image_size)
        for p in net.image_encoder.parameters():
            p.requires_grad_(False)
        with flop_counter() as counter, torch.no_grad():
            embedding = net.encode(torch.zeros(1, 3, image_size, image_size))
        encoder = counter.get_total_flops()
        print(f"    {name} {image_size} px: image encoder forward {encoder / 1e9:.0f} GFLOPs per image")
        out = []
        for objects, rounds in DECODE_LOADS:
            rounds_flops = rounds * decode_flops(net, embedding, objects)
            ratio = (encoder + rounds_flops) / rounds_flops
            load = f"{objects} object{'s' * (objects > 1)} x {rounds} round{'s' * (rounds > 1)}"
            print(
                f"    {name}: {load} per image: prompt rounds {rounds_flops / 1e9:.0f} GFLOPs; "
                f"step without cache / step with cache = {ratio:.2f}x (by FLOPs)"
            )
            out.append((objects, rounds, ratio))
    return out


def main(argv: list[str] | None = None):
    args = module_args(argv, TITLE)
    logging.getLogger("vitrain").setLevel(logging.ERROR)
    # the sam_tiny_shapes recipe's step (experiments/sam_tiny_shapes.yaml): 32 px, batch 8, 5 rounds
    sizes = dict(image_size=32, batch=8, rounds=5, train=64)
    if args.quick:
        sizes = dict(image_size=32, batch=4, rounds=2, train=8)
    tiny = measured(sizes, repeats=1 if args.quick else 4)
    loads = by_flops()
    ratios = [("sam_cache_tiny", tiny, "sam_tiny step without / with the embedding cache (measured)")]
    ratios += [
        (
            f"sam_cache_vit_b_{o}x{r}",
            v,
            f"sam_vit_b 1024 px, {o} objects x {r} rounds: without / with (FLOPs)",
        )
        for o, r, v in loads
    ]
    return [Ratio(key, value, what) for key, value, what in ratios]


if __name__ == "__main__":
    main()
