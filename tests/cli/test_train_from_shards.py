"""``train.py`` with ``data=imagenet_stream`` / ``data=text_stream``: a ViT and a GPT train from shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_VIT, run_cli, run_train, write_small_coco, write_txt_corpus
from vitrain.tools.prepare import main as prepare

TINY_GPT = ["model=gpt_tiny", "+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2",
            "+model.net.n_positions=64"]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def text_shards(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("text")
    out = tmp / "shards"
    corpus = write_txt_corpus(tmp / "corpus")
    prepare(["text", "--files", str(corpus), "--out", str(out), "--vocab-size", "300", "--seq-len", "32",
             "--workers", "1"])  # fmt: skip
    return out


@pytest.mark.slow
def test_vit_trains_from_image_shards_and_resumes_exactly(image_tree, tmp_path):
    shards = tmp_path / "shards"
    prepare(["images", "--root", str(image_tree), "--out", str(shards), "--workers", "1"])
    run = [
        *TINY_VIT, "data=imagenet_stream", f"data.root={shards}", "data.image_size=16", "data.batch_size=4",
        "data.num_workers=1", "trainer.max_epochs=2", "callbacks.model_checkpoint.save_top_k=-1",
    ]  # fmt: skip
    straight = tmp_path / "straight"
    proc = run_train(straight, *run)
    assert proc.returncode == 0, proc.stderr
    result = summary(straight)
    assert result["status"] == "completed" and result["global_step"] == 12  # 24 images / 4, 2 epochs
    checkpoint = last(straight)
    assert checkpoint["state_dict"]["net.head.weight"].shape[0] == 3  # num_classes from vitrain.json
    assert checkpoint["vitrain"]["class_names"] == ["cat", "dog", "fox"]
    # interrupted mid-epoch 1, resumed: the loader continues where it was, augmentation included
    resumed = tmp_path / "resumed"
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAtStep", "+callbacks.stop.step=9"]
    assert run_cli(resumed, *run, *stop).returncode == 0
    assert summary(resumed)["status"] == "interrupted" and summary(resumed)["global_step"] == 9
    proc = run_train(resumed, *run, "resume=auto")
    assert proc.returncode == 0, proc.stderr
    a = torch.load(resumed / "checkpoints" / "epoch001.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(straight / "checkpoints" / "epoch001.ckpt", map_location="cpu", weights_only=True)
    for key in b["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_vit_trains_from_image_shards_on_two_ranks(image_tree, tmp_path):
    shards = tmp_path / "shards"
    prepare(["images", "--root", str(image_tree), "--out", str(shards), "--workers", "1"])
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *TINY_VIT, "data=imagenet_stream", f"data.root={shards}", "data.image_size=16",
                   "data.batch_size=4", "trainer=ddp_cpu", "trainer.max_epochs=1", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = summary(run_dir)
    # each rank streams its own half of the 24 training images: 3 steps of 2 ranks x 4 images
    assert result["status"] == "completed" and result["global_step"] == 3
    assert 0.0 <= result["last"]["val/acc1"] <= 1.0  # validated on both ranks' halves of the 12 images
    assert last(run_dir)["vitrain"]["class_names"] == ["cat", "dog", "fox"]
    assert "Traceback" not in (run_dir / "train_ddp_process_1.log").read_text()


@pytest.mark.slow
def test_gpt_trains_from_text_shards_in_one_process(text_shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(run_dir, *TINY_GPT, "data=text_stream", f"data.root={text_shards}", "data.batch_size=8",
                   "trainer.max_epochs=1", "trainer.limit_val_batches=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((text_shards / "vitrain.json").read_text())
    assert summary(run_dir)["global_step"] == meta["splits"]["train"] // 8
    assert last(run_dir)["state_dict"]["net.wte.weight"].shape[0] == 300  # vocabulary from the shards


@pytest.mark.slow
def test_gpt_trains_from_text_shards_on_two_ranks(text_shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *TINY_GPT, "data=text_stream", f"data.root={text_shards}", "data.batch_size=4",
                   "trainer=ddp_cpu", "trainer.max_epochs=1", "trainer.limit_val_batches=2",
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((text_shards / "vitrain.json").read_text())
    # each rank streams its own half of the sequences: one step of 2 ranks x 4 = 8 sequences
    assert summary(run_dir)["status"] == "completed"
    assert summary(run_dir)["global_step"] == meta["splits"]["train"] // 8
    assert "Traceback" not in (run_dir / "train_ddp_process_1.log").read_text()
    assert os.path.getsize(run_dir / "checkpoints" / "last.ckpt") > 0


def test_detr_trains_from_coco_shards(tmp_path):
    write_small_coco(tmp_path / "coco")
    shards = tmp_path / "shards"
    prepare(["images", "--root", str(tmp_path / "coco"), "--out", str(shards), "--workers", "1",
             "--train-ann", "annotations/instances_train.json", "--val-ann", "annotations/instances_val.json",
             "--train-images", "train", "--val-images", "val", "--test-ann", "annotations/instances_val.json"])  # fmt: skip
    run_dir = tmp_path / "run"
    proc = run_train(
        run_dir, "model=detr_tiny", "data=coco_stream", f"data.root={shards}", "data.scales=[32]",
        "data.max_size=48", "data.crop_resize=[32]", "data.crop_size=[16,24]", "data.val_size=32",
        "data.num_workers=0", "data.pin_memory=false", "+model.net.hidden_dim=32", "+model.net.num_heads=2",
        "+model.net.num_encoder_layers=1", "+model.net.num_decoder_layers=1", "+model.net.dim_feedforward=32",
        "+model.net.num_queries=4", "trainer=cpu", "trainer.max_epochs=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = summary(run_dir)
    # 2 training images, batch 2: one step an epoch; classes from the shards' metadata
    assert result["status"] == "completed" and result["global_step"] == 2
    assert "val/map" in result["last"] and "test/map" in result["test"]
    assert last(run_dir)["state_dict"]["net.class_embed.weight"].shape[0] == 3  # 2 classes + no-object
