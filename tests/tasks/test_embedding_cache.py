"""SAM's image-embedding cache: computed once with a frozen encoder, keyed by image and encoder,
off (with one message) when the images are augmented or the encoder trains or is random."""

from __future__ import annotations

import logging
import shutil
from functools import partial

import lightning as L
import pytest
import torch

from vitrain.data.segmentation import ShapesMasksDataModule, image_key
from vitrain.models.sam_weights import create_sam
from vitrain.tasks.embedding_cache import EmbeddingCache, encoder_key, stochastic_modules
from vitrain.tasks.segmentation import SegmentationTask

TINY = dict(
    image_size=32, patch_size=4, window_size=4, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8, decoder_num_heads=2,
    decoder_mlp_dim=64, iou_head_hidden_dim=32,
)  # fmt: skip
TRAIN, VAL, TEST = 8, 4, 4


def frozen_task(cache_dir=None, seed=0, freeze=True, **kwargs) -> SegmentationTask:
    torch.manual_seed(seed)
    net = create_sam("sam_tiny", **{**TINY, **kwargs.pop("net", {})})
    task = SegmentationTask(
        net, partial(torch.optim.AdamW, lr=1e-3), num_rounds=2, mask_only_rounds=0, val_clicks=1,
        embedding_cache_dir=str(cache_dir) if cache_dir else None, **kwargs,
    )  # fmt: skip
    if freeze:
        for p in net.image_encoder.parameters():
            p.requires_grad_(False)
    return task


def data(hflip=False) -> ShapesMasksDataModule:
    return ShapesMasksDataModule(
        image_size=32, train_size=TRAIN, val_size=VAL, test_size=TEST, batch_size=4, hflip=hflip, seed=0
    )


def count_encoded(task: SegmentationTask) -> list[int]:
    """Images the image encoder sees, appended per call."""
    calls: list[int] = []
    task.net.image_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    return calls


def trainer(tmp_path, epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )  # fmt: skip


class Epochs(L.Callback):
    """Images encoded by the end of each epoch."""

    def __init__(self, calls: list[int]) -> None:
        self.calls, self.totals = calls, []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.totals.append(sum(self.calls))


def test_later_epochs_never_run_the_encoder_and_training_is_unchanged(tmp_path):
    task = frozen_task(tmp_path / "cache")
    calls = count_encoded(task)
    epochs = Epochs(calls)
    run = trainer(tmp_path, 3)
    run.callbacks.append(epochs)
    run.fit(task, datamodule=data())
    assert epochs.totals == [TRAIN + VAL] * 3  # every image once, in the first epoch only
    assert task.cache.hits == 2 * (TRAIN + VAL) and task.cache.misses == TRAIN + VAL
    run.test(task, datamodule=data())
    run.test(task, datamodule=data())
    run.validate(task, datamodule=data())  # mode=eval
    assert sum(calls) == TRAIN + VAL + TEST  # the test images once, however often tested
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == TRAIN + VAL + TEST and not list((tmp_path / "cache").rglob("*.tmp"))
    # the same training without the cache: the same decoder, step for step
    plain = frozen_task(embedding_cache=False)
    plain_calls = count_encoded(plain)
    trainer(tmp_path / "plain", 3).fit(plain, datamodule=data())
    assert sum(plain_calls) == 3 * (TRAIN + VAL)
    for (name, a), b in zip(
        task.net.mask_decoder.state_dict().items(), plain.net.mask_decoder.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), name
    assert not torch.equal(
        task.net.mask_decoder.state_dict()["iou_token.weight"],
        frozen_task().net.mask_decoder.state_dict()["iou_token.weight"],
    )


def test_a_cache_written_by_another_encoder_is_recomputed(tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    trainer(tmp_path / "a", 1).fit(frozen_task(cache_dir, seed=0), datamodule=data())
    other = frozen_task(cache_dir, seed=1)  # other encoder weights, same folder
    calls = count_encoded(other)
    trainer(tmp_path / "b", 1).fit(other, datamodule=data())
    assert sum(calls) == TRAIN + VAL  # nothing reused
    folders = sorted(p.name for p in cache_dir.iterdir())
    assert len(folders) == 2 and other.cache.dir.name in folders
    # the embeddings served are the new encoder's
    dm = data()
    dm.setup()
    image, _ = dm.val_set[0]
    stored = other.cache.get(image_key(image))
    with torch.no_grad():
        assert torch.allclose(stored, other.net.encode(image[None])[0], atol=1e-6)
    # files of the first encoder copied under the second one's key: detected, recomputed
    first = next(p for p in cache_dir.iterdir() if p.name != other.cache.dir.name)
    shutil.rmtree(other.cache.dir)
    shutil.copytree(first, other.cache.dir)
    third = frozen_task(cache_dir, seed=1)
    calls = count_encoded(third)
    with caplog.at_level(logging.WARNING, logger="vitrain.tasks.embedding_cache"):
        trainer(tmp_path / "c", 1).fit(third, datamodule=data())
    assert sum(calls) == TRAIN + VAL
    assert sum("written for another encoder" in r.message for r in caplog.records) == 1


def test_augmented_training_images_are_not_cached_with_one_message(tmp_path, caplog):
    task = frozen_task(tmp_path / "cache")
    calls = count_encoded(task)
    epochs = Epochs(calls)
    run = trainer(tmp_path, 2)
    run.callbacks.append(epochs)
    with caplog.at_level(logging.INFO, logger="vitrain.tasks.segmentation"):
        run.fit(task, datamodule=data(hflip=True))
    assert epochs.totals == [TRAIN + VAL, 2 * TRAIN + VAL]  # training images every epoch, val once
    messages = [r.message for r in caplog.records if "data.hflip=true" in r.message]
    assert len(messages) == 1 and "training images are not cached" in messages[0]


def test_no_cache_when_the_encoder_trains_or_is_random(tmp_path, caplog):
    task = frozen_task(tmp_path / "cache", freeze=False)
    calls = count_encoded(task)
    with caplog.at_level(logging.INFO, logger="vitrain.tasks.segmentation"):
        trainer(tmp_path, 2).fit(task, datamodule=data())
    assert sum(calls) == 2 * (TRAIN + VAL) and not (tmp_path / "cache").exists()
    assert any("the image encoder trains" in r.message for r in caplog.records)
    noisy = frozen_task(tmp_path / "cache", net={"drop_path": 0.1})  # frozen, but in training mode
    assert stochastic_modules(noisy.net.image_encoder.train()) == ["blocks.1.drop_path"]
    with caplog.at_level(logging.WARNING, logger="vitrain.tasks.segmentation"):
        trainer(tmp_path, 1).fit(noisy, datamodule=data())
    assert any("random in training mode (blocks.1.drop_path)" in r.message for r in caplog.records)
    assert not (tmp_path / "cache").exists()


def test_cache_keys_and_atomic_files(tmp_path):
    net = create_sam("sam_tiny", **TINY)
    key = encoder_key(net.image_encoder, "32-true")
    assert key == encoder_key(net.image_encoder, "32-true") != encoder_key(net.image_encoder, "bf16-mixed")
    with torch.no_grad():
        net.image_encoder.neck[1].bias.add_(1e-3)
    assert encoder_key(net.image_encoder, "32-true") != key
    image = torch.randn(3, 32, 32)
    changed = image.clone()
    changed[0, 0, 0] += 1e-3
    assert image_key(image) == image_key(image.clone()) != image_key(changed)
    cache = EmbeddingCache(tmp_path, key, memory_bytes=0)  # disk only
    embedding = torch.randn(32, 8, 8)
    cache.put(image_key(image), embedding)
    assert torch.equal(EmbeddingCache(tmp_path, key).get(image_key(image)), embedding)
    assert cache.get(image_key(changed)) is None
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{image_key(image)}.safetensors"]


def test_train_py_with_a_frozen_encoder_caches_and_says_so(tmp_path):
    from tests.helpers import run_train

    common = [
        "model=sam_tiny", "data=shapes_masks", "trainer=cpu", "data.image_size=32", f"data.train_size={TRAIN}",
        f"data.val_size={VAL}", f"data.test_size={TEST}", "data.batch_size=4", "model.num_rounds=2",
        "model.mask_only_rounds=0", "model.val_clicks=1", "trainer.max_epochs=1", "model.net.drop_path=0.1",
        "+model.net.encoder_embed_dim=32", "+model.net.encoder_depth=2", "+model.net.encoder_num_heads=2",
        "+model.net.encoder_global_attn_indexes=[1]", "+model.net.window_size=4",
        "model.freeze=[image_encoder,prompt_encoder]",
    ]  # fmt: skip
    proc = run_train(tmp_path / "run", *common, "data.hflip=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # frozen_eval keeps the frozen encoder's drop path off, so its embeddings are cached
    assert "Embedding cache: " + str(tmp_path / "run" / "embedding_cache") in proc.stderr
    files = list((tmp_path / "run" / "embedding_cache").rglob("*.safetensors"))
    assert len(files) == TRAIN + VAL + TEST  # train and val images in fit, test images after it
    flipped = run_train(tmp_path / "flip", *common, "data.hflip=true")
    assert flipped.returncode == 0, flipped.stderr[-3000:]
    assert flipped.stderr.count("data.hflip=true (random left-right flips) changes them every epoch") == 1
    assert len(list((tmp_path / "flip" / "embedding_cache").rglob("*.safetensors"))) == VAL + TEST


@pytest.mark.slow  # two DDP processes started by Lightning (about 40 s on 2 cores)
def test_ddp_ranks_share_one_cache(tmp_path):
    from tests.helpers import run_cli

    proc = run_cli(
        tmp_path / "run", "model=sam_tiny", "data=shapes_masks", "trainer=ddp_cpu", "data.image_size=32",
        "data.train_size=8", "data.val_size=4", "data.test_size=0", "data.batch_size=2", "data.hflip=false",
        "model.num_rounds=2", "model.mask_only_rounds=0", "model.val_clicks=1", "trainer.max_epochs=2",
        "+model.net.encoder_embed_dim=32", "+model.net.encoder_depth=2", "+model.net.encoder_num_heads=2",
        "+model.net.encoder_global_attn_indexes=[1]", "+model.net.window_size=4",
        "model.freeze=[image_encoder,prompt_encoder]", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "run" / "embedding_cache"
    files = list(folder.rglob("*.safetensors"))
    assert len(files) == 8 + 4 and not list(folder.rglob("*.tmp"))  # one file per image, none half-written
    key = files[0].parent.parent.name
    cache = EmbeddingCache(folder, key)
    assert all(cache.get(f.stem) is not None for f in files)  # every file complete, under its own keys
