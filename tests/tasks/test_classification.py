"""The classification task: losses with and without mixup, accuracy, optimizer groups."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from tests.helpers import run_train
from vitrain.errors import UserError
from vitrain.models import create_vit
from vitrain.tasks import ClassificationTask


def make_task(**kwargs):
    net = create_vit("vit_tiny_patch16_224", embed_dim=32, depth=1, num_heads=2, img_size=32, num_classes=10)
    return ClassificationTask(net, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05), **kwargs)


def batch(n=8):
    return torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))


def test_plain_cross_entropy_with_smoothing():
    task = make_task(label_smoothing=0.1)
    assert task.mixup is None
    assert isinstance(task.train_criterion, nn.CrossEntropyLoss)
    assert task.train_criterion.label_smoothing == 0.1


def test_mixup_uses_soft_targets_and_smooths_once():
    task = make_task(label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0)
    assert isinstance(task.train_criterion, SoftTargetCrossEntropy)
    assert task.mixup.label_smoothing == 0.1  # smoothing lives in the mixed targets only
    images, labels = batch()
    mixed, targets = task.mixup(images.clone(), labels)
    assert targets.shape == (8, 10) and torch.allclose(targets.sum(1), torch.ones(8))
    assert targets.min() >= 0.1 / 10 - 1e-6  # smoothed exactly once: off = smoothing / classes
    loss = task.training_step(batch(), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_mixup_rejects_odd_batches():
    task = make_task(mixup_alpha=0.8)
    with pytest.raises(UserError, match="even batch size"):
        task.training_step(batch(7), 0)


def test_train_accuracy_uses_original_labels():
    task = make_task(mixup_alpha=0.8, cutmix_alpha=1.0)
    images, labels = batch()
    task.net.head.weight.data.zero_()
    task.net.head.bias.data = nn.functional.one_hot(labels[0], 10).float() * 100
    task.training_step((images, labels), 0)
    expected = (labels == labels[0]).float().mean()
    assert task.train_acc1.compute() == pytest.approx(expected.item())


def test_build_optimizer_groups():
    task = make_task()
    opt = task.build_optimizer()
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(task.net.parameters()))


@pytest.mark.parametrize(
    "net",
    [
        ["model.net.name=convnext_atto", "+model.net.depths=[1,1,1,1]", "+model.net.dims=[8,16,32,64]"],
        ["model.net.name=swin_tiny_patch4_window7_224", "+model.net.embed_dim=16", "+model.net.depths=[1,1]",
         "+model.net.num_heads=[1,1]", "+model.net.window_size=4"],
    ],
    ids=["convnext", "swin"],
)  # fmt: skip
def test_any_timm_classifier_trains_on_digits_with_layer_decay(tmp_path, net):
    """``model=timm``: a tiny ConvNeXt and a tiny Swin, a few steps through the same task."""
    proc = run_train(
        tmp_path / "run", "model=timm", *net, "model.layer_decay=0.75", "data.batch_size=32",
        "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert summary["model"] == "timm" and 0 <= summary["last"]["val/acc1"] <= 1


def test_log_written_steps_logs_in_the_steps_lightning_writes():
    """Task.log_written_steps (per-step diagnostics) logs exactly in the steps whose logs
    Lightning's logger connector writes (its own rule, read in the same step)."""
    import lightning as L

    class Probe(ClassificationTask):
        def log(self, name, value, *args, **kwargs):
            if name == "train/probe":
                logged.add(self.global_step)
            super().log(name, value, *args, **kwargs)

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log_written_steps({"train/probe": loss.detach()})
            written.append(self.trainer._logger_connector.should_update_logs)  # Lightning's rule
            return loss

    logged, written = set(), []
    net = create_vit("vit_tiny_patch16_224", embed_dim=32, depth=1, num_heads=2, img_size=32, num_classes=10)
    task = Probe(net, optimizer=partial(torch.optim.SGD, lr=0.0))
    data = torch.utils.data.TensorDataset(*batch(14))
    trainer = L.Trainer(
        max_epochs=1, log_every_n_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, torch.utils.data.DataLoader(data, batch_size=2))
    assert written == [False, False, True, False, False, True, False]
    assert [step in logged for step in range(7)] == written
