"""``trainer.test`` runs a task's validation code on the test split and logs ``test/*``."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from vitrain.data import DigitsDataModule, ShapesDataModule
from vitrain.models import create_detr, create_vit
from vitrain.tasks import ClassificationTask, DetectionTask

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`"),
]


def trainer() -> L.Trainer:
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")


def test_classification_test_metrics_are_the_validation_metrics_of_the_test_images():
    torch.manual_seed(0)
    net = create_vit("vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=1, num_classes=10,
                     embed_dim=16, depth=1, num_heads=2)  # fmt: skip
    task = ClassificationTask(net, optimizer=partial(torch.optim.AdamW))
    data = DigitsDataModule(image_size=8, batch_size=64)
    data.setup()
    (tested,) = trainer().test(task, datamodule=data, verbose=False)
    assert set(tested) == {"test/loss", "test/acc1", "test/acc5"}
    (validated,) = trainer().validate(task, dataloaders=data.test_dataloader(), verbose=False)
    for name, value in validated.items():
        assert tested[name.replace("val/", "test/")] == pytest.approx(value)
    (val_only,) = trainer().validate(task, datamodule=data, verbose=False)
    assert set(val_only) == {"val/loss", "val/acc1", "val/acc5"}  # validation still logs val/*


def test_detection_test_split_reports_map():
    torch.manual_seed(0)
    net = create_detr("detr_tiny", num_classes=3, hidden_dim=32, num_heads=2, num_encoder_layers=1,
                      num_decoder_layers=1, dim_feedforward=32, num_queries=4)  # fmt: skip
    task = DetectionTask(net, optimizer=partial(torch.optim.AdamW))
    data = ShapesDataModule(image_size=32, train_size=2, val_size=2, test_size=3, batch_size=2)
    data.setup()
    (tested,) = trainer().test(task, datamodule=data, verbose=False)
    assert {"test/loss", "test/map", "test/map50"} <= set(tested)
    assert not any(name.startswith("val/") for name in tested)
