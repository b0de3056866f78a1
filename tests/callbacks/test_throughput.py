"""The Throughput callback: samples/s, step time, FLOPs per step, MFU, the GPU peak table."""

from __future__ import annotations

import copy
import csv
import re
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from vitrain.callbacks import Throughput
from vitrain.callbacks import throughput as throughput_module
from vitrain.callbacks.throughput import compute_type, flop_counter, gpu_peak_flops
from vitrain.errors import UserError
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
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
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


class TwoRanks(Throughput):
    """Reports as one of two DDP ranks would (every rank gets equal batches)."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.world_size = 2


def test_cpu_without_peak_has_no_mfu_and_world_size_scales(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput_module, "time", CLOCK)
    single, double = (
        Throughput(warmup_steps=2, log_every_n_steps=100),
        TwoRanks(warmup_steps=2, log_every_n_steps=100),
    )
    fit(tiny_task(TimedTask), [single], tmp_path / "a")
    fit(tiny_task(TimedTask), [double], tmp_path / "b")
    one, two = single.summary(), double.summary()
    assert one["mfu"] is None and one["peak_flops"] is None and one["peak"] is None
    assert one["tflops"] > 0 and one["measured_steps"] == 6  # the partial window counts
    assert two["samples_per_s"] == pytest.approx(2 * one["samples_per_s"])  # global rates
    assert two["flops_per_step"] == pytest.approx(2 * one["flops_per_step"])
    assert two["step_time_ms"] == pytest.approx(one["step_time_ms"]) == pytest.approx(10.0)


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


def test_peak_follows_the_precision(monkeypatch):
    """MFU divides by the peak of the compute type the run uses (Lightning's
    ``get_available_flops`` does the same by dtype), and says which."""
    assert compute_type("bf16-mixed") == compute_type("16-mixed") == compute_type("bf16-true") == "bf16"
    assert compute_type("64-true") is None
    monkeypatch.setattr(
        throughput_module.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3"
    )
    cuda = SimpleNamespace(device=torch.device("cuda"))
    previous = torch.get_float32_matmul_precision()
    try:
        for precision, matmul, peak, kind in [
            ("bf16-mixed", "highest", 989e12, "bf16"),
            ("32-true", "highest", 67e12, "fp32"),
            ("32-true", "high", 494e12, "tf32"),
        ]:
            torch.set_float32_matmul_precision(matmul)
            throughput = Throughput()
            throughput._find_peak(SimpleNamespace(precision=precision), cuda)
            assert throughput.peak_flops == peak
            assert (
                throughput.peak_source
                == f"dense {kind} peak of NVIDIA H100 80GB HBM3, trainer.precision={precision}"
            )
    finally:
        torch.set_float32_matmul_precision(previous)
    given = Throughput(peak_flops=1e12)
    given._find_peak(SimpleNamespace(precision="32-true"), cuda)
    assert given.peak_flops == 1e12 and given.peak_source == "callbacks.throughput.peak_flops"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup_steps": -1}, "callbacks.throughput.warmup_steps=-1: must be a whole number >= 0"),
        ({"warmup_steps": 1.5}, "callbacks.throughput.warmup_steps=1.5: must be a whole number >= 0"),
        ({"log_every_n_steps": 0}, "callbacks.throughput.log_every_n_steps=0: must be a whole number >= 1"),
        ({"peak_flops": -5.0}, "callbacks.throughput.peak_flops=-5.0: must be the device's peak FLOP/s"),
    ],
)
def test_invalid_settings_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=re.escape(message)):
        Throughput(**kwargs)


def test_totals_survive_a_resume_from_a_checkpoint_written_mid_window(tmp_path, monkeypatch):
    """The checkpoint at step 5 holds the 2 steps timed so far in the open window; the resumed
    fit adds its own measured steps (its first 3 are warm-up again)."""
    monkeypatch.setattr(throughput_module, "time", CLOCK)
    first = Throughput(warmup_steps=3, log_every_n_steps=100)
    saver = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1, filename="{step}"
    )
    fit(tiny_task(TimedTask), [first, saver], tmp_path, max_steps=6)
    saved = torch.load(tmp_path / "ckpt" / "step=5.ckpt", weights_only=True)["callbacks"]["Throughput"][
        "totals"
    ]
    assert saved["steps"] == 2 and saved["seconds"] == pytest.approx(0.020) and saved["samples"] == 2 * BATCH

    resumed = Throughput(warmup_steps=3, log_every_n_steps=100)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=10, logger=False, callbacks=[resumed], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(tiny_task(TimedTask), train_dataloaders=loader(), ckpt_path=tmp_path / "ckpt" / "step=5.ckpt")
    s = resumed.summary()
    assert s["measured_steps"] == 2 + 2  # steps 4-5 of the first segment, 9-10 of the second
    assert s["step_time_ms"] == pytest.approx(10.0) and s["samples_per_s"] == pytest.approx(BATCH / 0.010)
