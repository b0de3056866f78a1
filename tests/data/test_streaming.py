"""Streaming shards: ``python -m vitrain.prepare`` writes them, the streaming DataModules read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import write_small_coco, write_txt_corpus
from vitrain.data.stream import StreamingImageDataModule, StreamingTextDataModule
from vitrain.errors import UserError
from vitrain.tools.prepare import main as prepare


@pytest.fixture
def image_shards(image_tree: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    prepare(
        ["images", "--root", str(image_tree), "--out", str(out), "--workers", "2", "--chunk-bytes", "4KB"]
    )
    return out


@pytest.fixture
def text_shards(tmp_path: Path) -> Path:
    out = tmp_path / "text_shards"
    corpus = write_txt_corpus(tmp_path / "corpus")
    args = ["text", "--files", str(corpus), "--out", str(out), "--vocab-size", "300", "--seq-len", "16"]
    prepare([*args, "--workers", "1", "--chunk-bytes", "8KB"])
    return out


def image_data(root: Path, **kwargs) -> StreamingImageDataModule:
    args = dict(root=str(root), image_size=16, batch_size=4, auto_augment=None, re_prob=0.0, seed=3)
    data = StreamingImageDataModule(**{**args, **kwargs})
    data.setup()
    return data


def test_image_shards_keep_encoded_files_labels_and_classes(image_shards, image_tree):
    meta = json.loads((image_shards / "vitrain.json").read_text())
    assert meta["classes"] == ["cat", "dog", "fox"] and meta["splits"] == {"train": 24, "val": 12}
    assert len(list((image_shards / "train").glob("chunk-*.bin"))) > 1  # several shards
    data = image_data(image_shards)
    assert data.num_classes == 3 and data.classes == ["cat", "dog", "fox"] and not data.has_test_split
    images, labels = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    val_labels = torch.cat([y for _, y in data.val_dataloader()])
    assert sorted(val_labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(UserError, match="data.num_classes=5"):
        image_data(image_shards, num_classes=5)


def test_image_shards_hold_a_test_split_when_the_tree_has_one(image_tree, tmp_path):
    import shutil

    shutil.copytree(image_tree / "val", image_tree / "test")
    out = tmp_path / "with_test"
    meta = prepare(["images", "--root", str(image_tree), "--out", str(out), "--workers", "1"])
    assert meta["splits"] == {"train": 24, "val": 12, "test": 12}
    data = image_data(out)
    assert data.has_test_split
    assert sorted(torch.cat([y for _, y in data.test_dataloader()]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_image_shards_resume_mid_epoch_without_repeats_or_gaps(image_shards):
    def labels_and_pixels(batches):
        return [(y.tolist(), x.sum().item()) for x, y in batches]

    full = labels_and_pixels(image_data(image_shards).train_dataloader())
    loader = image_data(image_shards).train_dataloader()
    batches = iter(loader)
    first = labels_and_pixels(next(batches) for _ in range(2))
    state = loader.state_dict()
    del batches
    resumed = image_data(image_shards).train_dataloader()
    resumed.load_state_dict(state)
    rest = labels_and_pixels(resumed)
    assert len(full) == 6 and first + rest == full  # same order, same augmentation, nothing twice


def test_text_shards_hold_packed_blocks_and_the_tokenizer(text_shards):
    meta = json.loads((text_shards / "vitrain.json").read_text())
    assert meta["packing"] == "causal" and meta["seq_len"] == 16 and meta["vocab_size"] == 300
    data = StreamingTextDataModule(root=str(text_shards), batch_size=4)
    data.setup()
    assert data.model_sizes() == {"vocab_size": 300} and data.special_ids == meta["special_ids"]
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"].shape == (4, 17) and batch["tokens"].dtype == torch.int64
    # --test-fraction 0.1 (as data=text): held-out documents become the test split
    assert data.has_test_split and meta["splits"]["test"] > 0
    assert next(iter(data.test_dataloader()))["tokens"].shape[1] == 17
    text = data.tokenizer.decode(batch["tokens"][0].tolist())
    assert any(word in text for word in ("cat", "dog", "bird", "robot", "friend", "teacher"))
    with pytest.raises(UserError, match="holds causal shards but the model needs packing=masked"):
        StreamingTextDataModule(root=str(text_shards), packing="masked")


def test_missing_or_wrong_shards_are_one_line_errors(tmp_path, text_shards):
    with pytest.raises(UserError, match=r"cannot read .*vitrain.json.*python -m vitrain.prepare images"):
        StreamingImageDataModule(root=str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="holds text shards, not image_classification"):
        StreamingImageDataModule(root=str(text_shards))


def test_coco_shards_keep_boxes_labels_and_images_without_boxes(tmp_path):
    from vitrain.data.stream import StreamingDetectionDataModule

    write_small_coco(tmp_path / "coco")
    out = tmp_path / "shards"
    prepare(["images", "--root", str(tmp_path / "coco"), "--out", str(out), "--workers", "1",
             "--train-ann", "annotations/instances_train.json", "--val-ann", "annotations/instances_val.json",
             "--train-images", "train", "--val-images", "val",
             "--test-ann", "annotations/instances_val.json"])  # fmt: skip
    data = StreamingDetectionDataModule(root=str(out), scales=[60], max_size=100, crop_resize=[40],
                                        crop_size=[20, 30], val_size=60, batch_size=2)  # fmt: skip
    data.setup()
    assert data.num_classes == 2 and data.classes == ["car", "dog"]
    assert data.has_test_split and len(next(iter(data.test_dataloader()))[2]) == 2  # --test-ann, val images
    images, mask, targets = next(iter(data.val_dataloader()))
    assert images.shape[:2] == (2, 3) and mask.shape == (2, *images.shape[2:])
    by_id = {int(t["image_id"]): t for t in targets}
    assert by_id[1]["labels"].tolist() == [1, 0] and by_id[1]["iscrowd"].tolist() == [False, True]
    assert by_id[1]["orig_size"].tolist() == [30, 40] and by_id[2]["boxes"].shape == (0, 4)
    # the clipped box ends at the image edge: x2 = 40 of 40 -> 1.0 in normalised cxcywh
    cx, _, w, _ = by_id[1]["boxes"][1].tolist()
    assert cx + w / 2 == pytest.approx(1.0)
