"""``make bench``: vitrain against plain PyTorch, measured side by side in one process.

Prints ratios, each with a line saying what it compares, and writes them to
``docs/benchmarks.md`` (the section of this machine kind, ``cpu`` or the GPU's name, is replaced;
the others are kept). Absolute times on a shared machine drift, so the two sides run interleaved:
step by step (or batch by batch) in lockstep where nothing runs asynchronously, else in
alternating runs (A B B A ...), and the ratios are medians.

1. The vitrain training step (Lightning ``Trainer`` fitting ``ClassificationTask``) against a
   hand-written loop on the same network, initial weights, batches, optimizer groups and
   schedule (both end with the same weights, which the bench checks). On CPU a plain step runs
   after every vitrain step (a callback), each timed from the end of the step before, so data
   fetching, hooks, optimizer and schedule are included.
2. The vitrain ImageFolder input pipeline against torchvision's ``ImageFolder`` with the same
   transform object and DataLoader settings: images/s on a generated tree of JPEGs.
3. Achieved training FLOP/s of the ViT step (``FlopCounterMode``, forward + backward) as a
   fraction of this machine's measured dense matmul FLOP/s.
4. MAE: masked pretraining step against a full-token pass of the same encoder.
5. With a GPU: ViT-B/16 bf16 training images/s, vitrain against a plain loop (alternating runs,
   each timed over its whole span), and MFU against the GPU's dense bf16 peak.
6. Streaming shards: the ``data=imagenet_stream`` loader (litdata shards written by
   ``vitrain.prepare`` from the same generated JPEGs) against the ImageFolder loader, images/s;
   and the ``data=text_stream`` loader's tokens/s against the raw ``tokenizers`` batch encoder
   on the same corpus (what tokenizing on the fly would cost).

``--quick`` runs everything at toy sizes (a smoke test; nothing is written).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout without `pip install -e .`

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from vitrain.callbacks.throughput import flop_counter, gpu_peak_flops  # noqa: E402
from vitrain.data import ImageFolderDataModule  # noqa: E402
from vitrain.models import create_vit  # noqa: E402
from vitrain.tasks import ClassificationTask  # noqa: E402
from vitrain.tasks.optim import param_groups, warmup_cosine  # noqa: E402

LR, WEIGHT_DECAY, WARMUP_EPOCHS, MIN_LR_RATIO = 1e-3, 0.05, 0.25, 0.01


@dataclass(frozen=True)
class StepBench:
    """One training-step comparison: network, batch, steps, device and precision."""

    label: str
    model: str
    image_size: int
    batch: int
    steps: int  # per run
    warmup: int  # steps not timed at the start of each run
    repeats: int  # runs per side, alternating
    device: str = "cpu"
    bf16: bool = False
    net_kwargs: tuple = ()

    @property
    def precision(self) -> str:
        return "bf16-mixed" if self.bf16 else "32-true"


CPU_STEP = StepBench("ViT-Ti/16, 32 px, batch 32, fp32", "vit_tiny_patch16_224", 32, 32, 60, 6, 3)
GPU_STEP = StepBench(
    "ViT-B/16, 224 px, batch 128, bf16 autocast", "vit_base_patch16_224", 224, 128, 40, 10, 3, "cuda", True
)


# ---------------------------------------------------------------------------- helpers
def now(device: torch.device, sync: bool = True) -> float:
    if sync and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Batches(Dataset):
    """``steps`` ready-made batches ``(images (B, 3, S, S), labels (B,))``, cycling over a few."""

    def __init__(self, spec: StepBench, unique: int = 4) -> None:
        gen = torch.Generator().manual_seed(0)
        size = (spec.batch, 3, spec.image_size, spec.image_size)
        self.batches = [
            (
                torch.randn(size, generator=gen).to(spec.device),
                torch.randint(0, 10, (spec.batch,), generator=gen).to(spec.device),
            )
            for _ in range(unique)
        ]
        self.steps = spec.steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.batches[index % len(self.batches)]


def step_loader(batches: Batches) -> DataLoader:
    """The DataLoader both sides iterate (whole batches, already on the device)."""
    return DataLoader(batches, batch_size=None, shuffle=False)


def build_net(spec: StepBench) -> nn.Module:
    torch.manual_seed(0)
    return create_vit(
        spec.model, img_size=spec.image_size, num_classes=10, drop_path_rate=0.0, **dict(spec.net_kwargs)
    )


def sync_points(spec: StepBench) -> set[int]:
    return {spec.warmup - 1, spec.steps - 1}


class StepTimer(L.Callback):
    """Records the time at the end of every training step (the device is synchronised only at
    the ``sync_points``, so a CUDA step is timed over the whole span, not one by one)."""

    def __init__(self, spec: StepBench) -> None:
        self.spec, self.times, self.sync = spec, [], sync_points(spec)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(now(pl_module.device, batch_idx in self.sync))


def run_vitrain(
    template: nn.Module, batches: Batches, spec: StepBench, callbacks: list | None = None
) -> tuple[list[float], nn.Module]:
    """Fit ``ClassificationTask`` for ``spec.steps`` steps; returns step end times and the net."""
    task = ClassificationTask(
        copy.deepcopy(template),
        optimizer=partial(torch.optim.AdamW, lr=LR, weight_decay=WEIGHT_DECAY),
        scheduler=partial(warmup_cosine, warmup_epochs=WARMUP_EPOCHS, min_lr_ratio=MIN_LR_RATIO),
    )
    timer = StepTimer(spec)
    trainer = L.Trainer(
        accelerator="gpu" if spec.device == "cuda" else "cpu",
        devices=1,
        precision=spec.precision,
        max_steps=spec.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, *(callbacks or [])],
    )
    trainer.fit(task, train_dataloaders=step_loader(batches))
    return timer.times, task.net


class PlainLoop:
    """The hand-written side: the same network copy, AdamW groups, schedule and batches."""

    def __init__(self, template: nn.Module, batches: Batches, spec: StepBench) -> None:
        self.device, self.bf16 = torch.device(spec.device), spec.bf16
        self.net = copy.deepcopy(template).to(self.device).train()
        self.optimizer = torch.optim.AdamW(param_groups(self.net), lr=LR, weight_decay=WEIGHT_DECAY)
        # Lightning with max_steps and no max_epochs: one "epoch" of all steps (see configure_optimizers)
        self.schedule = warmup_cosine(
            self.optimizer, spec.steps, spec.steps, warmup_epochs=WARMUP_EPOCHS, min_lr_ratio=MIN_LR_RATIO
        )
        self.criterion = nn.CrossEntropyLoss()
        self.batches = iter(step_loader(batches))

    def step(self) -> None:
        images, labels = next(self.batches)
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        with torch.enable_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.criterion(self.net(images), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.schedule.step()


def run_plain(template: nn.Module, batches: Batches, spec: StepBench) -> tuple[list[float], nn.Module]:
    """The training of ``run_vitrain`` in a hand-written loop; step end times and the net."""
    loop, sync, times = PlainLoop(template, batches, spec), sync_points(spec), []
    for index in range(spec.steps):
        loop.step()
        times.append(now(loop.device, index in sync))
    return times, loop.net


class Lockstep(L.Callback):
    """Runs one plain step per vitrain step: both sides are timed in pairs, a fraction of a second
    apart, so that load from other processes hits both alike (CPU only: nothing asynchronous).

    The plain step runs alternately just before the vitrain training step (``on_train_batch_start``)
    and just after it (``on_train_batch_end``), so neither side always follows the other.
    ``vitrain[i]``: the time from the end of vitrain step ``i - 1`` to the end of step ``i``, a
    whole Lightning cycle (batch-end hooks, fetching the batch, batch-start hooks, training step,
    backward, optimizer and schedule), less the plain step run inside it. ``plain[i]``: plain step
    ``i``, its batch fetch included.
    """

    def __init__(self, plain: PlainLoop) -> None:
        self.plain_loop, self.vitrain, self.plain = plain, [], []
        self._last_end: float | None = None
        self._inside = 0.0  # plain time since the last vitrain step ended

    def _plain_step(self) -> float:
        start = time.perf_counter()
        self.plain_loop.step()
        end = time.perf_counter()
        self.plain.append(end - start)
        return end

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx % 2 == 0:
            end = self._plain_step()
            self._inside += self.plain[-1]
            if self._last_end is None:  # the first step: time starts after the plain step
                self._last_end, self._inside = end, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        mark = time.perf_counter()
        if self._last_end is not None:
            self.vitrain.append(mark - self._last_end - self._inside)
        self._last_end, self._inside = mark, 0.0
        if batch_idx % 2 == 1:
            self._last_end = self._plain_step()


def max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max((x.float() - y.float()).abs().max().item() for x, y in pairs)


def compare_lockstep(spec: StepBench) -> dict:
    """CPU: ``spec.repeats`` vitrain fits, each with a plain step after every vitrain step.

    The ratio is the median over all timed pairs of (vitrain step / plain step); the step times
    are the medians of each side.
    """
    template, batches = build_net(spec), Batches(spec)
    run_vitrain(
        template, batches, replace(spec, steps=spec.warmup)
    )  # untimed: a process's first steps are slow
    vitrain_s, plain_s, ratios, per_run, weight_diff = [], [], [], [], 0.0
    for _ in range(spec.repeats):
        plain = PlainLoop(template, batches, spec)
        lockstep = Lockstep(plain)
        _, net = run_vitrain(template, batches, spec, [lockstep])
        weight_diff = max(max_weight_difference(net, plain.net), weight_diff)
        v, p = lockstep.vitrain[spec.warmup :], lockstep.plain[spec.warmup :]
        vitrain_s += v
        plain_s += p
        pairs = [x / y for x, y in zip(v, p, strict=True)]
        ratios += pairs
        per_run.append(statistics.median(pairs))
        gc.collect()
    return {
        "vitrain_ms": 1000 * statistics.median(vitrain_s),
        "plain_ms": 1000 * statistics.median(plain_s),
        "ratio": statistics.median(ratios),
        "ratios": per_run,
        "pairs": len(ratios),
        "weight_diff": weight_diff,
        "flops": training_flops(template, spec),
    }


def training_flops(template: nn.Module, spec: StepBench) -> int:
    """FLOPs of one training forward + backward of a batch (matmuls, convolutions, attention)."""
    net = copy.deepcopy(template).to(spec.device).train()
    images, labels = Batches(spec, unique=1)[0]
    with flop_counter() as counter:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=spec.bf16):
            loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
    return counter.get_total_flops()


def compare_runs(spec: StepBench) -> dict:
    """GPU: alternate whole vitrain and plain runs (A B B A ...); each run's step time is the mean
    over its timed span, synchronised at the two ends only (per-step synchronisation would
    expose the framework's CPU time that asynchronous execution hides)."""
    template, batches = build_net(spec), Batches(spec)
    run_plain(template, batches, spec)  # untimed: a process's first steps are slow
    run_vitrain(template, batches, spec)
    vitrain_s, plain_s, ratios, weight_diff = [], [], [], None
    for repeat in range(spec.repeats):
        order = ("vitrain", "plain") if repeat % 2 == 0 else ("plain", "vitrain")
        result = {}
        for side in order:
            times, net = (run_vitrain if side == "vitrain" else run_plain)(template, batches, spec)
            gc.collect()  # the finished run's trainer and optimizer state
            span = (times[-1] - times[spec.warmup - 1]) / (len(times) - spec.warmup)
            result[side] = (span, net)
        if weight_diff is None:  # both sides computed the same training
            weight_diff = max_weight_difference(result["vitrain"][1], result["plain"][1])
        vitrain_s.append(result["vitrain"][0])
        plain_s.append(result["plain"][0])
        ratios.append(vitrain_s[-1] / plain_s[-1])
    return {
        "vitrain_ms": 1000 * statistics.median(vitrain_s),
        "plain_ms": 1000 * statistics.median(plain_s),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "weight_diff": weight_diff,
        "flops": training_flops(template, spec),
    }


def matmul_flops(device: str, dtype: torch.dtype, n: int, reps: int) -> tuple[float, float]:
    """(best, median) FLOP/s of an ``n x n`` matmul."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        start = now(dev)
        torch.mm(a, b)
        rates.append(2 * n**3 / (now(dev) - start))
    return max(rates), statistics.median(rates)


# ---------------------------------------------------------------------------- input pipeline
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
    """One epoch of both loaders in lockstep (a vitrain batch, then a plain batch): the seconds
    each batch took, the first batch of each left out."""
    pairs, iterators = [], (iter(vitrain), iter(plain))
    for index in range(min(len(vitrain), len(plain))):
        times = []
        for iterator in iterators:
            start = time.perf_counter()
            next(iterator)
            times.append(time.perf_counter() - start)
        if index:
            pairs.append((times[0], times[1]))
    return pairs


def compare_pipeline(
    per_class: int, image_size: int, batch: int, workers: tuple[int, ...], repeats: int
) -> dict:
    """images/s of both pipelines per ``num_workers``.

    ``num_workers=0``: batches in lockstep (a vitrain batch, then a plain one), ``repeats``
    epochs; the ratio is the median of the paired batch-time ratios. With workers, whose
    prefetching would overlap the two loaders, whole epochs alternate (A B B A ...); the ratio
    is the median of the per-epoch ratios.
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
            images_per_s(plain), images_per_s(dm.train_dataloader())  # untimed warm-up epochs
            if num_workers == 0:
                pairs = [p for _ in range(repeats) for p in batch_pairs(dm.train_dataloader(), plain)]
                results[num_workers] = {
                    "vitrain": batch / statistics.median(v for v, _ in pairs),
                    "plain": batch / statistics.median(p for _, p in pairs),
                    "ratio": statistics.median(p / v for v, p in pairs),
                    "how": f"median of {len(pairs)} paired batch-time ratios, in lockstep",
                }
                continue
            vitrain_rates, plain_rates, ratios = [], [], []
            for repeat in range(repeats):
                sides = ("vitrain", "plain") if repeat % 2 == 0 else ("plain", "vitrain")
                rate = {
                    side: images_per_s(dm.train_dataloader() if side == "vitrain" else plain)
                    for side in sides
                }
                vitrain_rates.append(rate["vitrain"])
                plain_rates.append(rate["plain"])
                ratios.append(rate["vitrain"] / rate["plain"])
            results[num_workers] = {
                "vitrain": statistics.median(vitrain_rates),
                "plain": statistics.median(plain_rates),
                "ratio": statistics.median(ratios),
                "how": f"median of {repeats} alternating epochs: " + ", ".join(f"{r:.3f}" for r in ratios),
            }
    return results


def compare_streaming(per_class: int, image_size: int, batch: int, workers: int, repeats: int) -> dict:
    """images/s of the streaming loader and of the ImageFolder loader, whole epochs alternating
    (A B B A ...), on the same JPEGs with the same transform settings; medians."""
    from vitrain.data import StreamingImageDataModule
    from vitrain.prepare import main as prepare

    with tempfile.TemporaryDirectory() as tmp:
        root, shards = Path(tmp) / "tree", Path(tmp) / "shards"
        write_tree(root, per_class)
        prepare(["images", "--root", str(root), "--out", str(shards), "--workers", "2"])
        common = dict(num_classes=10, image_size=image_size, batch_size=batch, num_workers=workers)
        folder = ImageFolderDataModule(str(root), persistent_workers=False, **common)
        stream = StreamingImageDataModule(str(shards), **common)
        for dm in (folder, stream):
            dm.setup("fit")
            images_per_s(dm.train_dataloader())  # untimed warm-up epoch
        rates: dict[str, list[float]] = {"stream": [], "folder": []}
        ratios = []
        for repeat in range(repeats):
            sides = ("stream", "folder") if repeat % 2 == 0 else ("folder", "stream")
            rate = {
                side: images_per_s((stream if side == "stream" else folder).train_dataloader())
                for side in sides
            }
            for side in sides:
                rates[side].append(rate[side])
            ratios.append(rate["stream"] / rate["folder"])
    return {
        "stream": statistics.median(rates["stream"]),
        "folder": statistics.median(rates["folder"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def compare_text(seq_len: int, batch: int, max_chars: int | None, repeats: int) -> dict:
    """Tokens/s delivered by the text_stream loader against ``Tokenizer.encode_batch`` on the same
    documents (the shards' own tokenizer), alternating; medians."""
    from tokenizers import Tokenizer

    from vitrain.data import StreamingTextDataModule
    from vitrain.data.text import embedded_documents
    from vitrain.prepare import main as prepare

    docs = embedded_documents()
    if max_chars:
        docs = [d for d in docs if len(d) < max_chars][:40]  # quick: 40 short documents
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for i, doc in enumerate(docs):
            (corpus / f"{i:04d}.txt").write_text(doc)
        shards = Path(tmp) / "shards"
        prepare(["text", "--files", str(corpus), "--out", str(shards), "--seq-len", str(seq_len), "--workers", "2",
                 "--vocab-size", "4096", "--val-fraction", "0.05"])  # fmt: skip
        data = StreamingTextDataModule(str(shards), batch_size=batch)
        data.setup()
        tok = Tokenizer.from_file(str(shards / "tokenizer.json"))

        def stream_rate() -> float:
            start, count = time.perf_counter(), 0
            for b in data.train_dataloader():
                count += b["tokens"][:, :-1].numel()
            return count / (time.perf_counter() - start)

        def encode_rate() -> float:
            start = time.perf_counter()
            count = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
            return count / (time.perf_counter() - start)

        stream_rate(), encode_rate()  # warm-up
        rates: dict[str, list[float]] = {"stream": [], "encode": []}
        for repeat in range(repeats):
            for side in ("stream", "encode") if repeat % 2 == 0 else ("encode", "stream"):
                rates[side].append(stream_rate() if side == "stream" else encode_rate())
    ratios = [a / b for a, b in zip(rates["stream"], rates["encode"], strict=True)]
    return {
        "stream": statistics.median(rates["stream"]),
        "encode": statistics.median(rates["encode"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "documents": len(docs),
    }


# ---------------------------------------------------------------------------- machine and report
def compare_mae(name: str, img_size: int, batch: int, reps: int, **overrides) -> dict:
    """MAE pretraining step (mask 0.75: encoder on the visible quarter + light decoder) against a
    full-token forward + backward of the same encoder; alternating, medians of ``reps`` each."""
    from vitrain.models import create_mae

    torch.manual_seed(0)
    net = create_mae(name, img_size=img_size, mask_ratio=0.75, **overrides)
    images = torch.randn(batch, 3, img_size, img_size)

    def masked() -> None:
        loss, _, _ = net(images)
        loss.backward()

    def full_tokens() -> None:
        latent, _, _ = net.forward_encoder(images, mask_ratio=0.0)
        latent.float().pow(2).mean().backward()

    times: dict[str, list[float]] = {"masked": [], "full": []}
    for fn in (masked, full_tokens):  # warm-up
        fn()
        net.zero_grad(set_to_none=True)
    for _ in range(reps):
        for key, fn in (("masked", masked), ("full", full_tokens)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
            net.zero_grad(set_to_none=True)
    masked_s, full_s = statistics.median(times["masked"]), statistics.median(times["full"])
    return {"masked_ms": masked_s * 1000, "full_ms": full_s * 1000, "speedup": full_s / masked_s}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_kind() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def machine_lines(threads: int) -> list[str]:
    lines = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores visible, torch threads {threads}",
        f"- torch {torch.__version__}, lightning {L.__version__}, python {platform.python_version()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    return lines


def write_markdown(path: Path, kind: str, body: list[str]) -> None:
    """Replace the ``## <kind>`` section of ``path`` (keeping the others) with ``body``."""
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/bench.py`): vitrain against plain PyTorch, measured side",
        "by side in one process. Each `make bench` replaces the section of its machine kind (`cpu` or",
        "the GPU's name) and keeps the others.",
        "",
        "Reading the numbers: on a shared machine absolute times drift (on the 2-core development VM",
        "by up to 2x between runs, as other jobs take the cores); the ratios are measured with the two",
        "sides interleaved (step by step in lockstep, or alternating runs) and are the numbers to",
        "compare. In lockstep, two runs of the same code agree to about 2%; alternating epochs with",
        "DataLoader workers scatter more (see the per-epoch ratios). With `num_workers=0` the",
        "transforms run in the training process, where torch uses all its intra-op threads: on a busy",
        "2-core machine a small tensor op (ToTensor, Normalize) then waits for the second thread, so",
        "images/s there swings with the load; DataLoader workers use one thread each.",
        "",
    ]
    sections: dict[str, list[str]] = {}
    if path.exists():
        current = None
        for line in path.read_text().splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                sections[current] = []
            elif current is not None:
                sections[current].append(line)
    sections[kind] = [""] + body + [""]
    out = list(header)
    for name, lines in sections.items():
        while lines and not lines[-1].strip():
            lines.pop()
        out += [f"## {name}", *lines, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, a smoke test; writes nothing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cpu_step, gpu_step = CPU_STEP, GPU_STEP
    pipeline = dict(per_class=32, image_size=224, batch=32, workers=(0, 2), repeats=5)
    matmul_n, matmul_reps = 2048, 7
    if args.quick:
        tiny = (("embed_dim", 32), ("depth", 1), ("num_heads", 2))
        cpu_step = replace(cpu_step, label="tiny ViT (quick)", steps=6, warmup=2, repeats=2, net_kwargs=tiny)
        gpu_step = replace(gpu_step, label="tiny ViT (quick)", steps=6, warmup=2, repeats=2, net_kwargs=tiny)
        pipeline = dict(per_class=4, image_size=64, batch=8, workers=(0, 2), repeats=2)
        matmul_n, matmul_reps = 256, 3

    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    start = time.perf_counter()
    say(f"vitrain bench on {machine_kind()} ({cpu_model()}, {args.threads} torch threads)")

    # 1. training step
    step = compare_lockstep(cpu_step)
    say()
    say(f"[1] training step: {cpu_step.label}, AdamW + warmup_cosine, CPU")
    say("    vitrain = Lightning Trainer fitting ClassificationTask; plain = a hand-written loop on the same")
    say("    network, initial weights, batches, optimizer groups and schedule")
    say(f"    in lockstep: one plain step just before or after each vitrain step, {step['pairs']} timed pairs (after "
        f"{cpu_step.warmup} warm-up steps) in {cpu_step.repeats} fits; medians")  # fmt: skip
    say(f"    vitrain {step['vitrain_ms']:.1f} ms/step, plain {step['plain_ms']:.1f} ms/step "
        f"({step['vitrain_ms'] - step['plain_ms']:+.1f} ms); final weights max |difference| "
        f"{step['weight_diff']:.1e}")  # fmt: skip
    say(f"    vitrain step / plain step = {step['ratio']:.3f} (goal <= 1.05; median of the paired ratios; "
        "per fit: " + ", ".join(f"{r:.3f}" for r in step["ratios"]) + ")")  # fmt: skip

    # 2. input pipeline
    say()
    say(f"[2] ImageFolder input pipeline: {pipeline['per_class'] * 10} random 128 px JPEGs, 10 classes, timm "
        f"train transform at {pipeline['image_size']} px, batch {pipeline['batch']}, {pipeline['repeats']} epochs")  # fmt: skip
    say(
        "    vitrain = ImageFolderDataModule.train_dataloader(); torchvision = ImageFolder + DataLoader with the"
    )
    say("    same transform object and loader settings")
    for workers, r in compare_pipeline(**pipeline).items():
        say(
            f"    num_workers={workers}: vitrain {r['vitrain']:.0f} images/s, torchvision {r['plain']:.0f} images/s"
        )
        say(f"    num_workers={workers}: vitrain / torchvision images/s = {r['ratio']:.3f} ({r['how']})")

    # 3. FLOP/s against the machine's matmul
    best, median = matmul_flops("cpu", torch.float32, matmul_n, matmul_reps)
    achieved = step["flops"] / (step["vitrain_ms"] / 1000)
    plain_achieved = step["flops"] / (step["plain_ms"] / 1000)
    say()
    say(
        f"[3] achieved training FLOP/s of the step in [1] against this CPU's fp32 {matmul_n}x{matmul_n} matmul"
    )
    say(f"    step: {step['flops'] / 1e9:.2f} GFLOP (FlopCounterMode, forward + backward); "
        f"vitrain {achieved / 1e9:.1f} GFLOP/s, plain {plain_achieved / 1e9:.1f} GFLOP/s")  # fmt: skip
    say(f"    torch.mm fp32: best {best / 1e9:.1f} GFLOP/s of {matmul_reps} (median {median / 1e9:.1f})")
    say(f"    vitrain training FLOP/s / matmul FLOP/s = {achieved / best:.3f}")

    # 4. MAE: masked pretraining step against a full-token pass of the same encoder
    # ViT-L, as the paper's ~3x: with ViT-B the 8-block decoder caps the gain near 1.8x
    mae_spec = dict(name="mae_vit_l16", img_size=224, batch=4, reps=2)
    if args.quick:
        mae_spec = dict(name="mae_vit_tiny", img_size=32, batch=4, reps=2)
    mae = compare_mae(**mae_spec)
    say()
    say(f"[4] MAE pretraining step: {mae_spec['name']} at {mae_spec['img_size']} px, batch {mae_spec['batch']}, "
        f"fp32, CPU; median of {mae_spec['reps']} alternating steps each")  # fmt: skip
    say("    masked = forward + backward of the MAE at mask ratio 0.75 (encoder on visible patches, decoder,")
    say("    loss); full = forward + backward of the same encoder on all patches (no decoder)")
    say(f"    masked {mae['masked_ms']:.0f} ms/step, full tokens {mae['full_ms']:.0f} ms/step")
    say(f"    full-token step / MAE step = {mae['speedup']:.2f}x (paper: about 3x; goal >= 2.5x)")

    # 5. GPU
    say()
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        gpu = compare_runs(gpu_step)
        peak = gpu_peak_flops(name)
        images = {side: gpu_step.batch / (gpu[f"{side}_ms"] / 1000) for side in ("vitrain", "plain")}
        bf16_best, _ = matmul_flops("cuda", torch.bfloat16, 256 if args.quick else 8192, matmul_reps)
        say(f"[5] GPU training: {gpu_step.label}, {name}; mean step over {gpu_step.steps - gpu_step.warmup} "
            f"steps after {gpu_step.warmup} warm-up, median of {gpu_step.repeats} alternating runs")  # fmt: skip
        say(
            "    vitrain = Lightning Trainer (bf16-mixed) fitting ClassificationTask; plain = PyTorch + timm loop"
        )
        say(f"    vitrain {images['vitrain']:.0f} images/s ({gpu['vitrain_ms']:.1f} ms/step), "
            f"plain PyTorch + timm {images['plain']:.0f} images/s ({gpu['plain_ms']:.1f} ms/step)")  # fmt: skip
        say(f"    vitrain step / plain step = {gpu['ratio']:.3f}; vitrain images/s / plain images/s = "
            f"{1 / gpu['ratio']:.3f} (runs: "
            + ", ".join(f"{1 / r:.3f}" for r in gpu["ratios"]) + ")")  # fmt: skip
        achieved_gpu = gpu["flops"] / (gpu["vitrain_ms"] / 1000)
        say(f"    step FLOPs {gpu['flops'] / 1e12:.2f} TFLOP; vitrain {achieved_gpu / 1e12:.0f} TFLOP/s; "
            f"measured bf16 matmul best {bf16_best / 1e12:.0f} TFLOP/s")  # fmt: skip
        if peak:
            say(
                f"    MFU (vitrain FLOP/s / dense bf16 peak {peak / 1e12:.0f} TFLOP/s) = {achieved_gpu / peak:.3f}"
            )
        else:
            say(f"    MFU: no dense bf16 peak known for {name!r}")
    else:
        say("[5] GPU training (ViT-B/16 bf16, vitrain vs plain, MFU): skipped, no CUDA device")

    # 6. streaming shards
    stream_spec = dict(per_class=32, image_size=224, batch=32, workers=2, repeats=5)
    text_spec = dict(seq_len=128, batch=32, max_chars=None, repeats=5)
    if args.quick:
        stream_spec = dict(per_class=4, image_size=64, batch=8, workers=0, repeats=2)
        text_spec = dict(seq_len=32, batch=8, max_chars=4000, repeats=2)
    images = compare_streaming(**stream_spec)
    say()
    say(f"[6] streaming shards: {stream_spec['per_class'] * 10} random 128 px JPEGs as litdata shards "
        f"(vitrain.prepare images), timm train transform at {stream_spec['image_size']} px, batch "
        f"{stream_spec['batch']}, num_workers={stream_spec['workers']}, {stream_spec['repeats']} alternating epochs")  # fmt: skip
    say(
        "    stream = data=imagenet_stream (StreamingDataLoader); folder = data=imagenet (ImageFolder) on the same files"
    )
    say(f"    stream {images['stream']:.0f} images/s, folder {images['folder']:.0f} images/s")
    say(f"    streaming / ImageFolder images/s = {images['ratio']:.3f} (goal >= 1 on local disk; epochs: "
        + ", ".join(f"{r:.3f}" for r in images["ratios"]) + ")")  # fmt: skip
    text = compare_text(**text_spec)
    say(f"    text: {text['documents']} CPython help documents, GPT blocks of {text_spec['seq_len']} tokens, batch "
        f"{text_spec['batch']}; stream = data=text_stream loader, tokens delivered; encode = the shards' tokenizer")  # fmt: skip
    say("    (tokenizers Tokenizer.encode_batch, its Rust threads) on the same documents, tokens produced")
    say(
        f"    stream {text['stream'] / 1e6:.2f} M tokens/s, encode_batch {text['encode'] / 1e6:.2f} M tokens/s"
    )
    say(f"    text_stream / encode_batch tokens/s = {text['ratio']:.3f} (runs: "
        + ", ".join(f"{r:.3f}" for r in text["ratios"]) + ")")  # fmt: skip
    say()
    say(f"bench time {time.perf_counter() - start:.0f} s")

    if args.quick:
        return
    body = machine_lines(args.threads) + ["", "```", *lines, "```"]
    write_markdown(args.out, machine_kind(), body)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
