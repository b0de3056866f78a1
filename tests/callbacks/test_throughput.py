"""The Throughput callback: samples/s, step time, FLOPs per step, MFU, the GPU peak table."""

from __future__ import annotations

import copy
import csv
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from vitrain.callbacks import Throughput
from vitrain.callbacks import throughput as throughput_module
from vitrain.callbacks.throughput import flop_counter, gpu_peak_flops
from vitrain.models import create_vit
from vitrain.tasks import ClassificationTask

BATCH = 8


def tiny_task(task_cls=ClassificationTask) -> ClassificationTask:
    net = create_vit(
        "vit_tiny_patch16_224", embed_dim=32, depth=1, num_heads=2, img_size=16, in_chans=1, num_classes=10
    )
    return task_cls(net, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))


def loader(n: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)
    )
    return DataLoader(data, batch_size=BATCH)


def fit(task, callbacks, tmp_path, max_steps: int = 8, val_loader=None, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=CSVLogger(tmp_path, name="csv", version=0),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(task, train_dataloaders=loader(), val_dataloaders=val_loader)
    return trainer


def vit_training_flops(
    batch: int, tokens: int, patches: int, dim: int, depth: int, in_chans: int, classes: int
):
    """Analytic FLOPs (2 per multiply-add) of a timm ViT's training forward + backward.

    Linear layers cost 3x their forward (forward, input gradient, weight gradient); the patch
    embedding 2x (the images need no gradient); fused attention's backward recomputes the
    scores: 5 matmuls against 2 in the forward.
    """
    patch_embed = 2 * batch * patches * in_chans * 16 * 16 * dim
    linears = depth * 2 * batch * tokens * 12 * dim * dim + 2 * batch * dim * classes
    attention = depth * 2 * batch * tokens * tokens * dim
    return 2 * patch_embed + 3 * linears + (2 + 5) * attention


def test_flop_counter_counts_vit_training_exactly_on_cpu():
    """Attention included: torch's registry misses the CPU's fused attention kernel."""
    net = create_vit(
        "vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, in_chans=1, num_classes=10
    )
    with flop_counter() as counter:
        net(torch.randn(4, 1, 32, 32)).sum().backward()
    expected = vit_training_flops(batch=4, tokens=5, patches=4, dim=32, depth=2, in_chans=1, classes=10)
    assert counter.get_total_flops() == expected


def test_fit_measures_rates_flops_and_mfu(tmp_path):
    L.seed_everything(0)
    task = tiny_task()
    reference = copy.deepcopy(task)
    throughput = Throughput(warmup_steps=3, log_every_n_steps=2, peak_flops=1e9)
    fit(task, [throughput], tmp_path)
    s = throughput.summary()

    assert s["measured_steps"] == 5  # 8 batches, 3 of them warm-up
    assert s["samples_per_s"] > 0 and s["step_time_ms"] > 0
    assert s["samples_per_s"] * s["step_time_ms"] / 1000 == pytest.approx(BATCH)  # equal batches

    # FLOPs per step: an independent count of one training step, and the analytic formula
    images, labels = next(iter(loader()))
    with flop_counter() as counter:
        reference.train_criterion(reference(images), labels).backward()
    assert s["flops_per_step"] == pytest.approx(counter.get_total_flops(), rel=0.1)
    analytic = vit_training_flops(batch=BATCH, tokens=2, patches=1, dim=32, depth=1, in_chans=1, classes=10)
    assert s["flops_per_step"] == pytest.approx(analytic, rel=0.1)

    achieved = s["flops_per_step"] / (s["step_time_ms"] / 1000)
    assert s["tflops"] == pytest.approx(achieved / 1e12)
    assert s["mfu"] == pytest.approx(achieved / 1e9)  # achieved / peak_flops

    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("perf/samples_per_s")]
    assert len(rows) == 2  # windows of 2 measured steps; the fifth step closes no window
    assert all(float(r["perf/mfu"]) > 0 and float(r["perf/step_time_ms"]) > 0 for r in rows)


def test_counting_leaves_training_unchanged(tmp_path):
    """The FLOP count rides on a real step: weights end as in a fit without the callback."""
    L.seed_everything(0)
    task = tiny_task()
    twin = copy.deepcopy(task)
    fit(task, [Throughput(warmup_steps=1)], tmp_path / "a", max_steps=4)
    L.seed_everything(0)
    fit(twin, [], tmp_path / "b", max_steps=4)
    for a, b in zip(task.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cpu_without_peak_has_no_mfu_and_world_size_scales(tmp_path):
    throughput = Throughput(warmup_steps=2, log_every_n_steps=100)
    fit(tiny_task(), [throughput], tmp_path)
    single = throughput.summary()
    assert single["mfu"] is None and single["peak_flops"] is None
    assert single["tflops"] > 0 and single["measured_steps"] == 6  # the partial window counts
    throughput.world_size = 2  # what DDP over 2 ranks reports: global rates
    double = throughput.summary()
    assert double["samples_per_s"] == pytest.approx(2 * single["samples_per_s"])
    assert double["flops_per_step"] == pytest.approx(2 * single["flops_per_step"])
    assert double["step_time_ms"] == pytest.approx(single["step_time_ms"])


class Clock:
    """A fake ``time`` module: time moves only when the task says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


CLOCK = Clock()


class TimedTask(ClassificationTask):
    """A training step takes 10 ms and a validation step 1 s of ``CLOCK``; 2 tokens per sample."""

    def training_step(self, batch, batch_idx):
        CLOCK.now += 0.010
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        CLOCK.now += 1.0
        return super().validation_step(batch, batch_idx)

    def tokens_in_batch(self, batch) -> int:
        return 2 * len(batch[0])


def test_validation_time_is_excluded_and_tokens_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput_module, "time", CLOCK)
    throughput = Throughput(warmup_steps=1, log_every_n_steps=3)
    fit(
        tiny_task(TimedTask), [throughput], tmp_path, val_loader=loader(8),
        val_check_interval=4, limit_val_batches=1,
    )  # fmt: skip
    s = throughput.summary()
    assert s["measured_steps"] == 7  # validation after batches 4 and 8, inside windows
    assert s["step_time_ms"] == pytest.approx(10.0)
    assert s["samples_per_s"] == pytest.approx(BATCH / 0.010)
    assert s["tokens_per_s"] == pytest.approx(2 * s["samples_per_s"])


def test_flops_per_batch_hook_replaces_counting(tmp_path):
    class Declared(ClassificationTask):
        def flops_per_batch(self, batch) -> int:
            return 1000 * len(batch[0])

    throughput = Throughput(warmup_steps=1)
    fit(tiny_task(Declared), [throughput], tmp_path, max_steps=3)
    assert throughput.summary()["flops_per_step"] == pytest.approx(1000 * BATCH)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-PCIE-40GB", 312e12),
        ("NVIDIA A10G", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("Tesla T4", None),
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_gpu_peak_lookup(name, peak):
    assert gpu_peak_flops(name) == peak
