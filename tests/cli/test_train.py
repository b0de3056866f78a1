"""End to end through ``python train.py``: training runs, summary, dry run, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.helpers import ROOT, TINY_VIT, assert_user_error, launch_cli, run_train

FAST = [*TINY_VIT, "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]


def test_digits_run_writes_summary_and_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(run_dir, *FAST, "data.image_size=16", "data.batch_size=32")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "vit_ti16" and summary["data"] == "digits"
    assert summary["monitor"] == {"metric": "val/acc1", "mode": "max"}
    assert summary["global_step"] == 8 and summary["epochs"] == 2
    assert summary["last"]["epoch"] == 1 and summary["last"]["step"] == 8
    assert summary["best"]["val/acc1"] == max(summary["best"]["val/acc1"], summary["last"]["val/acc1"])
    assert 0.0 <= summary["last"]["val/acc1"] <= 1.0 and summary["last"]["val/loss"] > 0
    assert summary["params"]["total"] == summary["params"]["trainable"] > 0
    assert summary["wall_time_s"] > 0 and summary["train_samples_per_s"] > 0
    assert summary["throughput"]["samples_per_s"] > 0 and summary["throughput"]["tflops"] > 0
    for path in summary["checkpoints"].values():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["global_step"] in (4, 8)
    assert summary["checkpoints"]["last"].endswith("checkpoints/last.ckpt")
    assert summary["config"] == str(run_dir / "resolved_config.yaml")
    assert "vit_tiny_patch16_224" in (run_dir / "resolved_config.yaml").read_text()
    assert "val/acc1" in (run_dir / "config_tree.log").read_text()
    assert (run_dir / "csv" / "metrics.csv").exists()
    assert f"Run directory: {run_dir}" in proc.stderr


def test_imagefolder_run(tmp_path, image_tree):
    proc = run_train(
        tmp_path / "run", *FAST, "data=imagenet", f"data.root={image_tree}", "data.num_classes=3",
        "data.image_size=32", "data.batch_size=4", "data.num_workers=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"] == "imagenet" and summary["global_step"] == 8
    assert "val/acc3" in summary["last"]  # top-k capped at the class count


def test_mixup_run(tmp_path):
    proc = run_train(
        tmp_path / "run", *FAST, "data.image_size=16", "model.mixup_alpha=0.8",
        "model.cutmix_alpha=1.0", "model.label_smoothing=0.1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 8


def test_dry_run_prints_one_line_and_reads_no_data(tmp_path):
    # an explicit class count: with data.num_classes=null vitrain counts the class folders first
    proc = run_train(
        tmp_path / "run", "dry_run=true", "data=imagenet", "data.root=/no/such/data", "data.num_classes=1000"
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"params: total=(\d+) trainable=(\d+)\n", proc.stdout), proc.stdout
    total = int(re.search(r"total=(\d+)", proc.stdout).group(1))
    assert total == 5_717_416  # ViT-Ti/16 at 224 px with 1000 classes
    assert not (tmp_path / "run" / "summary.json").exists()


def test_unknown_option_in_a_group(tmp_path):
    proc = launch_cli(f"hydra.run.dir={tmp_path / 'run'}", "model=vit_huge99")
    assert_user_error(proc, "Could not find 'model/vit_huge99'", "vit_b16")


def test_unknown_key(tmp_path):
    proc = launch_cli(f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_epoch=3")
    assert_user_error(proc, "trainer.max_epoch")
    # the closest existing key, not Hydra's advice to add the misspelled one
    assert "Did you mean trainer.max_epochs? (trainer.max_epochs=3)" in proc.stderr
    assert "+trainer.max_epoch" not in proc.stderr


def test_missing_data_root(tmp_path):
    proc = run_train(tmp_path / "run", "data=imagenet", f"data.root={tmp_path}/absent")
    assert_user_error(proc, f"{tmp_path}/absent/train not found", "ROOT/train/<class_a>/<image>.jpg")
    assert "CONFIG" not in proc.stdout  # the data is checked before the config tree is printed


def test_empty_class_folder(tmp_path, image_tree):
    (image_tree / "val" / "emu").mkdir()
    proc = run_train(
        tmp_path / "run", *FAST, "data=imagenet", f"data.root={image_tree}", "data.num_classes=3"
    )
    assert_user_error(proc, f"class folder {image_tree}/val/emu holds no images")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image(tmp_path, image_tree, workers):
    bad = image_tree / "train" / "dog" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n garbage")
    proc = run_train(
        tmp_path / "run", *TINY_VIT, "data=imagenet", f"data.root={image_tree}", "data.num_classes=3",
        "data.image_size=32", "data.batch_size=24", f"data.num_workers={workers}", "trainer.max_epochs=1",
    )  # fmt: skip
    assert_user_error(proc, f"cannot read image {bad}", "remove or replace the file")
    assert "Original Traceback" not in proc.stderr


def test_model_paired_with_wrong_kind_of_data(tmp_path):
    proc = run_train(tmp_path / "run", f"hydra.searchpath=[file://{ROOT}/tests/configs]", "data=fake_text")
    assert_user_error(proc, "model=vit_ti16", "data=fake_text", "needs image_classification data")
    assert not (tmp_path / "run" / "config_tree.log").exists()  # failed before anything was built
