"""The image input pipeline: vitrain's ImageFolder training loader against torchvision's.

vitrain = ``ImageFolderDataModule.train_dataloader()``; torchvision = ``ImageFolder`` + ``DataLoader``
with the same transform object and loader settings, on a generated tree of random 128 px JPEGs
(timm train transform). ``num_workers=0``: batches in lockstep; with workers, alternating epochs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import Ratio, module_args
from vitrain.data import ImageFolderDataModule

TITLE = "ImageFolder input pipeline: vitrain against torchvision"


def write_tree(root: Path, per_class: int, classes: int = 10, size: int = 128) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 1)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i}.jpg", quality=90)


def images_per_s(loader: DataLoader) -> float:
    """Images/s after the first batch (worker start-up excluded)."""
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for images, _ in iterator:
        count += len(images)
    return count / (time.perf_counter() - start)


def batch_pairs(vitrain: DataLoader, plain: DataLoader) -> list[tuple[float, float]]:
    """One epoch of both loaders in lockstep, which goes first alternating batch by batch (a
    vitrain batch then a plain one, then the other way round): the seconds each batch took
    ``(vitrain, plain)``, the first batch of each left out."""
    pairs, iterators = [], (iter(vitrain), iter(plain))
    for index in range(min(len(vitrain), len(plain))):
        times = [0.0, 0.0]
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            start = time.perf_counter()
            next(iterators[side])
            times[side] = time.perf_counter() - start
        if index:
            pairs.append((times[0], times[1]))
    return pairs


def epoch_loader(dm: ImageFolderDataModule, epoch: int):
    """vitrain's training loader at ``epoch``, as Lightning sets it before every epoch: each timed
    epoch draws fresh augmentations, as the torchvision loader's reshuffled epochs do."""
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(epoch)
    return loader


def compare_pipeline(
    per_class: int, image_size: int, batch: int, workers: tuple[int, ...], repeats: int
) -> dict:
    """images/s of both pipelines per ``num_workers``.

    ``num_workers=0``: batches in lockstep (a vitrain batch and a plain one, alternating which
    goes first), ``repeats`` epochs; the ratio is the median of the paired batch-time ratios. With workers, whose
    prefetching would overlap the two loaders, whole epochs alternate (A B C C B A ...); the
    ratio is the median of the per-epoch ratios, and a copy of the torchvision loader, alternated
    the same way, gives the noise floor of that ratio (``floor``, ideally 1.000).
    """
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, per_class)
        for num_workers in workers:
            dm = ImageFolderDataModule(
                str(root), num_classes=10, image_size=image_size, batch_size=batch, num_workers=num_workers
            )
            dm.setup("fit")
            plain_set = torchvision.datasets.ImageFolder(
                str(root / "train"), transform=dm.train_set.transform
            )
            plain = DataLoader(
                plain_set, batch_size=batch, shuffle=True, drop_last=True, num_workers=num_workers,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            epochs = iter(range(repeats + 1))
            images_per_s(plain), images_per_s(epoch_loader(dm, next(epochs)))  # untimed warm-up epochs
            if num_workers == 0:
                pairs = [
                    p for _ in range(repeats) for p in batch_pairs(epoch_loader(dm, next(epochs)), plain)
                ]
                results[num_workers] = {
                    "vitrain": batch / statistics.median(v for v, _ in pairs),
                    "plain": batch / statistics.median(p for _, p in pairs),
                    "ratio": statistics.median(p / v for v, p in pairs),
                    "how": f"median of {len(pairs)} paired batch-time ratios, in lockstep",
                }
                continue
            # a copy of the torchvision loader, alternated the same way: the resolution of the ratio
            copy = DataLoader(
                plain_set, batch_size=batch, shuffle=True, drop_last=True, num_workers=num_workers,
                generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
            others = {"plain": plain, "copy": copy}
            rates = {"vitrain": [], **{side: [] for side in others}}
            for repeat in range(repeats):
                for side in list(rates) if repeat % 2 == 0 else list(reversed(rates)):
                    loader = epoch_loader(dm, next(epochs)) if side == "vitrain" else others[side]
                    rates[side].append(images_per_s(loader))
            ratios = [v / p for v, p in zip(rates["vitrain"], rates["plain"], strict=True)]
            floor = [c / p for c, p in zip(rates["copy"], rates["plain"], strict=True)]
            results[num_workers] = {
                "vitrain": statistics.median(rates["vitrain"]),
                "plain": statistics.median(rates["plain"]),
                "ratio": statistics.median(ratios),
                "floor": statistics.median(floor),
                "how": f"median of {repeats} alternating epochs: " + ", ".join(f"{r:.3f}" for r in ratios),
                "floor_how": ", ".join(f"{r:.3f}" for r in floor),
            }
    return results


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    pipeline = dict(per_class=64, image_size=224, batch=32, workers=(0, 2), repeats=7)
    if args.quick:
        pipeline = dict(per_class=4, image_size=64, batch=8, workers=(0, 2), repeats=2)
    print(f"    {pipeline['per_class'] * 10} random 128 px JPEGs, 10 classes, timm train transform at "
          f"{pipeline['image_size']} px, batch {pipeline['batch']}, {pipeline['repeats']} epochs")  # fmt: skip
    print(
        "    vitrain = ImageFolderDataModule.train_dataloader(); torchvision = ImageFolder + DataLoader with the"
    )
    print("    same transform object and loader settings")
    ratios = []
    for workers, r in compare_pipeline(**pipeline).items():
        print(
            f"    num_workers={workers}: vitrain {r['vitrain']:.0f} images/s, torchvision {r['plain']:.0f} images/s"
        )
        print(f"    num_workers={workers}: vitrain / torchvision images/s = {r['ratio']:.3f} ({r['how']})")
        if "floor" in r:
            print(
                f"    num_workers={workers}: the noise floor, torchvision against a copy of itself alternated "
                f"the same way = {r['floor']:.3f} ({r['floor_how']}; ideally 1.000)"
            )
        ratios.append(
            Ratio(
                f"pipeline_w{workers}",
                r["ratio"],
                f"images/s vitrain / torchvision, num_workers={workers}",
                ">= 1.0",
            )
        )
        if "floor" in r:
            what = f"torchvision / a copy of itself, num_workers={workers}, alternating: the noise floor"
            ratios.append(Ratio(f"pipeline_w{workers}_floor", r["floor"], what))
    return ratios


if __name__ == "__main__":
    main()
