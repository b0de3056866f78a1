"""Streaming shards (litdata) written by ``python -m vitrain.prepare``: images and text.

``StreamingDataset`` reads ``ROOT/<split>/`` from a local folder or an object store (``s3://``,
``gs://``, ...; remote chunks are cached in ``cache_dir``) and shards the items by rank and
loader worker itself, so Lightning's distributed sampler stays off (vitrain's trainers set
``use_distributed_sampler=false``). ``StreamingDataLoader`` has ``state_dict`` /
``load_state_dict``: Lightning stores its position in every checkpoint and a resumed run (with
the same number of ranks and workers) continues after the last trained batch. Each sample's
augmentation is seeded by ``(seed, epoch, index)``, as in the map-style loaders.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import torch
from torch.utils.data import get_worker_info

from vitrain.data.base import DataModule
from vitrain.data.detection import DetectionDataModule
from vitrain.data.detection_transforms import detr_train_transform, detr_val_transform
from vitrain.data.imagefolder import ImageFolderDataModule
from vitrain.data.shards import META_FILE, join, read_text
from vitrain.data.text import _PadCollate
from vitrain.data.tokenizer import PACKINGS, check_special_tokens
from vitrain.errors import UserError, require_choice
from vitrain.seeding import sample_seed, seeded

log = logging.getLogger(__name__)
# litdata logs its cache and mmap choices at INFO for every dataset it opens
logging.getLogger("litdata").setLevel(logging.WARNING)


def read_meta(root: str, kind: str) -> dict:
    """The ``vitrain.json`` of a shard folder, checked to hold data of ``kind``."""
    path = join(root, META_FILE)
    try:
        meta = json.loads(read_text(path))
    except (OSError, ValueError) as err:
        command = "images --root <ImageFolder>" if kind != "text" else "text --files <corpus>"
        raise UserError(
            f"data.root={root}: cannot read {path} ({err}). Write shards first: python -m vitrain.prepare "
            f"{command} --out {root}"
        ) from err
    if meta.get("kind") != kind:
        raise UserError(
            f"data.root={root} holds {meta.get('kind')} shards, not {kind}: point it at {kind} shards."
        )
    return meta


class _SeededTransform:
    """Decode and transform one item with generators seeded by ``(seed, epoch, index)``
    (:func:`vitrain.seeding.sample_seed`); in the main process the generators are restored after."""

    def __init__(self, decode, seed: int) -> None:
        self.decode, self.seed, self.epoch = decode, seed, 1

    def __call__(self, item: dict):
        seed = sample_seed(self.seed, self.epoch, int(item["index"]))
        with seeded(seed, restore=get_worker_info() is None):  # a worker: nothing else draws
            return self.decode(item)


def _streaming_dataset(root: str, split: str, train: bool, seed: int, cache_dir: str | None, transform):
    from litdata import StreamingDataset

    class _Dataset(StreamingDataset):
        """Tells the seeded transform the epoch the loader is in."""

        def __getitem__(self, index):
            transform.epoch = self.current_epoch
            return super().__getitem__(index)

    return _Dataset(
        input_dir=join(root, split), cache_dir=cache_dir, shuffle=train, drop_last=train, seed=seed,
        transform=transform,
    )  # fmt: skip


class _StreamLoaders:
    """The held-out sets and loaders of the streaming DataModules (which set ``root``, ``meta``,
    ``seed``, ``cache_dir`` and the loader settings): litdata's ``StreamingDataLoader`` over the
    module's ``train_set`` / ``val_set`` / ``test_set`` (stateful: the loader position goes into
    the checkpoint), batched with the module's ``collate_fn`` (None: torch's default).

    A streaming dataset learns the epoch (its shuffle and the samples' seeds) in the loader's
    worker processes when they start, so the workers cannot persist between epochs
    (huggingface/datasets #6673 is the same trap): ``data.persistent_workers=true`` is refused."""

    early_setup = False  # datasets shard by rank when created: after the process group exists
    keeps_workers = False

    def _stream_loader(self, dataset, train: bool):
        from litdata import StreamingDataLoader

        return StreamingDataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory,
            collate_fn=self.collate_fn, drop_last=train,
        )  # fmt: skip

    def _held_out_sets(self, transform) -> tuple:
        """``(val_set, test_set)`` streamed from the shards with ``transform``; the test set is
        None when ``prepare`` wrote no test split."""
        return tuple(
            _streaming_dataset(self.root, split, False, self.seed, self.cache_dir, transform)
            if split in self.meta["splits"]
            else None
            for split in ("val", "test")
        )

    def train_dataloader(self):
        return self._stream_loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._stream_loader(self.val_set, train=False)

    def test_dataloader(self):
        return self._stream_loader(self.test_set, train=False)


class _DecodeImage:
    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, item: dict) -> tuple[torch.Tensor, int]:
        return self.transform(_decode_rgb(item)), int(item["label"])


def _decode_rgb(item: dict):
    """The shard item's encoded image as an RGB PIL image; one that does not decode names the
    item and its source file (``prepare`` records its path as ``source``)."""
    from PIL import Image

    try:
        return Image.open(io.BytesIO(bytes(item["image"]))).convert("RGB")
    except Exception as err:  # PIL raises many types for damaged data
        source = bytes(item["source"]).decode() if "source" in item else "(not recorded in these shards)"
        raise UserError(
            f"data.root holds a shard item that does not decode: item {int(item['index'])}, source file "
            f"{source} ({type(err).__name__}: {err}). Replace or remove that file and write the shards again "
            "with python -m vitrain.prepare images (it decodes every image first)."
        ) from err


class StreamingImageDataModule(_StreamLoaders, ImageFolderDataModule):
    """Image classification from shards of ``python -m vitrain.prepare images``.

    The transforms (timm's, with the network's mean/std) and the kind checks are those of
    ``data=imagenet``; ``num_classes`` (null: from the shards) and the class names come from
    ``ROOT/vitrain.json``. ``root`` is a local folder or an object-store URI; ``cache_dir`` keeps
    downloaded chunks (null: litdata's default cache).
    """

    def __init__(
        self, root: str, num_classes: int | None = None, cache_dir: str | None = None, **kwargs
    ) -> None:
        self.meta = read_meta(str(root), "image_classification")
        found = self.meta["num_classes"]
        super().__init__(root=str(root), num_classes=found if num_classes is None else num_classes, **kwargs)
        self.check_num_classes(found, f"data.root={root} (vitrain.json)")
        self.root, self.cache_dir = str(root), cache_dir

    def check_root(self) -> None:
        """Shards need no ImageFolder layout (``vitrain.json`` was read instead)."""

    def model_sizes(self) -> dict[str, int]:
        """``{"num_classes": ...}`` from the shards (taken where the config leaves it null)."""
        return {"num_classes": self.num_classes}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.classes = list(self.meta["classes"])
        self.train_set = _streaming_dataset(
            self.root,
            "train",
            True,
            self.seed,
            self.cache_dir,
            _SeededTransform(_DecodeImage(self._transform(True)), self.seed),
        )
        val = _SeededTransform(_DecodeImage(self._transform(False)), self.seed)
        self.val_set, self.test_set = self._held_out_sets(val)


class _DecodeDetection:
    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, item: dict):
        image = _decode_rgb(item)
        target = {
            "boxes": torch.as_tensor(np.asarray(item["boxes"], dtype=np.float32)).reshape(-1, 4),
            "labels": torch.as_tensor(np.asarray(item["labels"], dtype=np.int64)).reshape(-1),
            "iscrowd": torch.as_tensor(np.asarray(item["iscrowd"]).astype(bool)).reshape(-1),
            "orig_size": torch.as_tensor(np.asarray(item["orig_size"], dtype=np.int64)),
            "image_id": torch.tensor(int(item["image_id"])),
        }
        return self.transform(image, target)


class StreamingDetectionDataModule(_StreamLoaders, DetectionDataModule):
    """Object detection from shards of ``python -m vitrain.prepare images --root <COCO root>``.

    DETR's augmentation and batches as ``data=coco`` (padded images with pixel masks); the class
    names and ``num_classes`` (null: from the shards) come from ``ROOT/vitrain.json``.

    Args:
        root: the shard folder (local, or an object-store URI).
        num_classes: None: from the shards; an explicit value must match them.
        cache_dir: where chunks downloaded from an object store are kept (None: litdata's
            default cache).
        scales: short sides of the multi-scale resize, pixels (one drawn per image).
        max_size: the longest long side after the multi-scale and the validation resize.
        crop_resize: short sides of the resize before the random crop (one drawn per image).
        crop_size: ``[min, max]`` side of the random crop, pixels.
        val_size: short side of the validation and test images.
    """

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        cache_dir: str | None = None,
        scales: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
        max_size: int = 1333,
        crop_resize: tuple[int, ...] = (400, 500, 600),
        crop_size: tuple[int, int] = (384, 600),
        val_size: int = 800,
        **loader_kwargs,
    ) -> None:
        self.meta = read_meta(str(root), "detection")
        found = self.meta["num_classes"]
        super().__init__(num_classes=found if num_classes is None else num_classes, **loader_kwargs)
        self.check_num_classes(found, f"data.root={root} (vitrain.json)")
        self.root, self.cache_dir = str(root), cache_dir
        self.train_transform = detr_train_transform(
            scales, max_size, crop_resize, crop_size, self.mean, self.std
        )
        self.val_transform = detr_val_transform(val_size, max_size, self.mean, self.std)

    model_size_keys = ("num_classes",)

    def model_sizes(self) -> dict[str, int]:
        return {"num_classes": self.num_classes}

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        self.classes = list(self.meta["classes"])
        train = _SeededTransform(_DecodeDetection(self.train_transform), self.seed)
        self.train_set = _streaming_dataset(self.root, "train", True, self.seed, self.cache_dir, train)
        val = _SeededTransform(_DecodeDetection(self.val_transform), self.seed)
        self.val_set, self.test_set = self._held_out_sets(val)


class _TextItem:
    """A shard item's token arrays as int64 tensors (the ``index`` is dropped)."""

    def __call__(self, item: dict) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in item.items():
            if key != "index":
                out[key] = torch.as_tensor(np.asarray(value), dtype=torch.int64)
                if key == "next_sentence_label":
                    out[key] = out[key].reshape(())
        return out


class StreamingTextDataModule(_StreamLoaders, DataModule):
    """Pre-tokenized, packed text from shards of ``python -m vitrain.prepare text``.

    Batches are those of ``data=text`` (GPT: ``{"tokens": (B, seq_len + 1)}``; BERT: padded
    ``input_ids`` / ``token_type_ids`` / ``attention_mask`` (+ ``next_sentence_label``)). The
    packing, sequence length, special token ids and the tokenizer (``ROOT/tokenizer.json``) come
    from the shards; the vocabulary size sets ``model.net.vocab_size`` when that is null.

    Args:
        root: the shard folder (local, or an object-store URI).
        packing: ``causal`` (GPT) or ``masked`` (BERT), the model's; the shards must have been
            written with it.
        cache_dir: where chunks downloaded from an object store are kept (None: litdata's
            default cache).
    """

    kind = "text"
    model_size_keys = ("vocab_size",)

    def __init__(
        self,
        root: str,
        packing: str = "causal",
        cache_dir: str | None = None,
        batch_size: int = 32,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        require_choice("data.packing", packing, PACKINGS, "it follows the model")
        self.meta = read_meta(str(root), "text")
        if self.meta["packing"] != packing:
            raise UserError(
                f"data.root={root} holds {self.meta['packing']} shards but the model needs packing={packing}: "
                f"write shards with python -m vitrain.prepare text --packing {packing}."
            )
        self.root, self.packing, self.cache_dir = str(root), packing, cache_dir
        self.seq_len, self.nsp = int(self.meta["seq_len"]), bool(self.meta["nsp"])
        self.special_ids = {k: int(v) for k, v in self.meta["special_ids"].items()}
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The shards' tokenizer (``ROOT/tokenizer.json``)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = join(self.root, "tokenizer.json")
            self._tokenizer = Tokenizer.from_str(read_text(path))
            check_special_tokens(self._tokenizer, self.packing, path)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def model_sizes(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size}

    @property
    def collate_fn(self):
        return _PadCollate(self.special_ids["pad"]) if self.packing == "masked" else None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = _streaming_dataset(self.root, "train", True, self.seed, self.cache_dir, _TextItem())
        self.val_set, self.test_set = self._held_out_sets(_TextItem())

    def predict_dataloader(self):
        raise UserError(
            "mode=predict classifies images; for text use python -m vitrain.generate <checkpoint> --prompt ..."
        )
