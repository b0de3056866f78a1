"""Evaluation on the held-out test split, checkpoints that carry their config, data read first."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

import vitrain.run
import vitrain.run.build
from tests.helpers import TINY_VIT, compose_train, run_train, write_image
from vitrain.errors import UserError
from vitrain.run.stored_config import checkpoint_config, use_checkpoint_config


def stored_checkpoint(tmp_path, *overrides: str):
    """A checkpoint file holding the composed config of ``overrides`` (as training writes it)."""
    cfg = compose_train(*overrides, output_dir=str(tmp_path / "train"))
    config = checkpoint_config(cfg, HydraConfig.get().runtime.choices)
    path = tmp_path / "stored.ckpt"
    torch.save({"state_dict": {}, "vitrain": {"config": config}}, path)
    return path, config


def test_checkpoint_config_replaces_model_and_data(tmp_path):
    path, config = stored_checkpoint(
        tmp_path, "model=vit_s16", "data=digits", "data.image_size=16", *TINY_VIT
    )
    assert config["choices"] == {"model": "vit_s16", "data": "digits"}
    overrides = ["mode=test", f"ckpt_path={path}", "data.batch_size=7"]
    cfg = compose_train(*overrides, output_dir=str(tmp_path / "test"))  # default model: vit_ti16
    choices = use_checkpoint_config(cfg, HydraConfig.get().runtime.choices, overrides)
    assert choices == {"model": "vit_s16", "data": "digits"}
    assert cfg.model.net.name == "vit_small_patch16_224" and cfg.model.net.embed_dim == 32
    assert cfg.data.image_size == 16 and cfg.data.batch_size == 7  # a loader setting applies


def test_a_moved_data_root_applies_to_the_stored_data(tmp_path):
    path, _ = stored_checkpoint(tmp_path, "data=imagenet", "data.root=/old/place", "data.num_classes=5")
    overrides = ["mode=predict", f"ckpt_path={path}", "data=imagenet", "data.root=/new/place"]
    cfg = compose_train(*overrides, output_dir=str(tmp_path / "predict"))
    use_checkpoint_config(cfg, HydraConfig.get().runtime.choices, overrides)
    assert cfg.data.root == "/new/place" and cfg.data.num_classes == 5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=vit_b16", "model=vit_b16 contradicts the checkpoint, trained with model=vit_s16"),
        (
            "+model.net.depth=3",
            r"model.net.depth=3 contradicts the checkpoint, trained with model.net.depth=2",
        ),
        (
            "data.image_size=32",
            r"data.image_size=32 contradicts the checkpoint, trained with data.image_size=16",
        ),
    ],
)
def test_overrides_that_contradict_the_checkpoint_are_one_error(tmp_path, override, message):
    path, _ = stored_checkpoint(tmp_path, "model=vit_s16", "data.image_size=16", *TINY_VIT)
    overrides = ["mode=eval", f"ckpt_path={path}", override]
    cfg = compose_train(*overrides, output_dir=str(tmp_path / "eval"))
    with pytest.raises(UserError, match=message):
        use_checkpoint_config(cfg, HydraConfig.get().runtime.choices, overrides)


def test_data_errors_stop_the_run_before_any_logger_exists(image_tree, tmp_path, monkeypatch):
    write_image(image_tree / "train" / "yak" / "0.png", "RGB")  # a class the val split lacks
    cfg = compose_train(
        "data=imagenet", f"data.root={image_tree}", "data.image_size=16", "logger=wandb", *TINY_VIT,
        output_dir=str(tmp_path / "run"),
    )  # fmt: skip
    built = []
    real = vitrain.run.build.build_all
    monkeypatch.setattr(vitrain.run.build, "build_all", lambda group: built.append(group) or real(group))
    with pytest.raises(UserError, match="train and val class folders differ"):
        vitrain.run.run(cfg)
    assert cfg.logger not in built and not (tmp_path / "run" / "wandb").exists()


@pytest.mark.slow
def test_default_data_reports_test_accuracy_and_mode_test_needs_only_the_checkpoint(tmp_path):
    tiny = [*TINY_VIT, "+model.net.patch_size=4", "data.image_size=16", "trainer.max_epochs=2"]
    # keep the epoch with the highest validation loss (the first): the test then restores an older
    # checkpoint, which must not roll the run's summary back to it
    worst = ["callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=max"]
    proc = run_train(tmp_path / "train", *tiny, *worst)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    test = summary["test"]
    assert test["checkpoint"] == summary["checkpoints"]["best"] and test["checkpoint"].endswith(
        "epoch000.ckpt"
    )
    assert summary["last"]["epoch"] == 1 and summary["epochs"] == 2
    assert {"test/acc1", "test/acc5", "test/loss"} <= set(test)
    assert "val/acc1" in summary["best"]  # validation numbers beside the test ones
    # the checkpoint carries model and data: no model/size overrides needed
    proc = run_train(tmp_path / "test", "mode=test", f"ckpt_path={test['checkpoint']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert again["mode"] == "test"
    assert again["metrics"]["test/acc1"] == pytest.approx(test["test/acc1"])
