"""Writing streaming shards (litdata) for ``data=imagenet_stream``, ``data=coco_stream`` and
``data=text_stream`` (``python -m vitrain.prepare`` is the command line).

Each split (train, val, and a held-out test split when the source has one: ``ROOT/test/``, a test
annotation file or a test fraction of the documents) becomes ``OUT/<split>/`` (litdata's
``index.json`` + ``chunk-*.bin``), written by ``litdata.optimize`` in parallel worker processes
with a progress bar; ``resume`` continues an interrupted conversion from the chunks already
written (litdata's ``use_checkpoint``). ``OUT/vitrain.json`` records what the DataModules need:
the kind of data, the class names (images) or the packing, sequence length and special token ids
(text, with ``OUT/tokenizer.json``).

* :func:`prepare_images`: an ImageFolder tree ``ROOT/{train,val[,test]}/<class>/<image>``. Each
  item is ``{"index", "label", "image", "source"}`` with the image file's bytes as they are
  (JPEG/PNG stay encoded: the loader decodes them, no quality is lost and shards stay small) and
  the source file's path.
* :func:`prepare_coco`: COCO-format detection: each image's bytes with its boxes (absolute xyxy,
  clipped, empty ones dropped), labels (category ids mapped as ``data=coco`` does), crowd flags,
  original size, image id and the source file's path, for ``data=coco_stream``.
* Every image is decoded once before anything is written (in ``workers`` processes), as the
  loader will decode it: a file that does not decode stops the conversion with the list of bad
  files, or with ``skip_corrupt`` is left out (with a count and the list).
* :func:`prepare_text`: the corpus is tokenized and packed exactly as ``data=text`` does (same
  document split, tokenizer training when none is given, GPT blocks of ``seq_len + 1`` tokens or
  BERT sentence-packed sequences), then each sequence is one item ``{"index", <token arrays>}``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitrain.data.base import IMAGE_SUFFIXES
from vitrain.data.shards import FORMAT_VERSION, META_FILE, is_remote, join, write_text
from vitrain.errors import UserError

log = logging.getLogger("vitrain.prepare")

SPLITS = ("train", "val")


# ------------------------------------------------------------------ images
def image_folder_items(root: Path, split: str, classes: list[str] | None = None):
    """``([(path, label, index), ...], classes)`` of ``root/split/<class>/<image>`` (sorted)."""
    folder = root / split
    if not folder.is_dir():
        raise UserError(f"--root {root}: no {split}/ folder. Expected ROOT/{{train,val}}/<class>/<image>.")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = classes if classes is not None else found
    if found != classes:
        raise UserError(
            f"--root {root}: the class folders of {split}/ differ from train/ ({found} vs {classes})."
        )
    if not classes:
        raise UserError(f"--root {root}: {folder} holds no class folders.")
    items = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"--root {root}: class folder {folder / name} holds no images.")
        items += [(str(p), label) for p in files]
    return [(path, label, index) for index, (path, label) in enumerate(items)], classes


class ImageItem:
    """``optimize``'s function for one image: its encoded bytes, label, index and source file
    (picklable)."""

    def __call__(self, item: tuple[str, int, int]) -> dict:
        path, label, index = item
        return {
            "index": index,
            "label": label,
            "image": Path(path).read_bytes(),
            "source": source_bytes(path),
        }


def source_bytes(path: str | Path) -> bytes:
    """A source file's path as UTF-8 bytes for a shard item's ``source``: litdata would store a
    ``str`` naming an existing image file as that image (and decode it when read)."""
    return str(path).encode("utf-8")


def decode_error(path: str) -> str | None:
    """Why the image file ``path`` does not decode to RGB as the loaders decode it (None: it does)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.convert("RGB")  # every pixel, not only the header
    except Exception as err:  # noqa: BLE001  (PIL raises many types for damaged files)
        return f"{type(err).__name__}: {err}"
    return None


def corrupt_images(paths: list[str], workers: int) -> dict[str, str]:
    """``{path: error}`` of the files among ``paths`` that do not decode, checked in ``workers``
    processes (in this one for a single worker)."""
    if not paths:
        return {}
    log.info("Decoding %d images to check them (%d processes)", len(paths), max(1, workers))
    if workers <= 1 or len(paths) < 2:
        errors = map(decode_error, paths)
        return {p: e for p, e in zip(paths, errors, strict=True) if e is not None}
    import multiprocessing

    context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    with context.Pool(min(workers, len(paths))) as pool:
        errors = pool.map(decode_error, paths, chunksize=max(1, min(256, len(paths) // (4 * workers))))
    return {p: e for p, e in zip(paths, errors, strict=True) if e is not None}


def drop_corrupt(paths: list[str], workers: int, skip: bool, where: str) -> set[str]:
    """The files among ``paths`` that do not decode: refused (a :class:`UserError` listing them)
    unless ``skip``, then returned so the caller leaves them out."""
    bad = corrupt_images(paths, workers)
    if not bad:
        return set()
    listing = "\n".join(f"  {path} ({error})" for path, error in list(bad.items())[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    if not skip:
        raise UserError(
            f"{where}: {len(bad)} of {len(paths)} image files do not decode:\n{listing}{more}\n"
            "Remove or replace them, or pass --skip-corrupt to leave them out of the shards."
        )
    log.warning("--skip-corrupt: left out %d of %d images that do not decode:\n%s%s",
                len(bad), len(paths), listing, more)  # fmt: skip
    return set(bad)


def prepare_images(
    root: str, out: str, workers: int, chunk_bytes: str, resume: bool, skip_corrupt: bool = False
) -> dict:
    """Shards of an ImageFolder tree; returns the metadata written to ``OUT/vitrain.json``.
    Images that do not decode are refused, or left out with ``skip_corrupt`` (see
    :func:`drop_corrupt`)."""
    root_path = Path(root)
    train, classes = image_folder_items(root_path, "train")
    parts = {"train": train, "val": image_folder_items(root_path, "val", classes)[0]}
    if (root_path / "test").is_dir():  # the held-out test split, as data=imagenet's test/
        parts["test"] = image_folder_items(root_path, "test", classes)[0]
    paths = [path for items in parts.values() for path, _, _ in items]
    bad = drop_corrupt(paths, workers, skip_corrupt, f"--root {root}")
    if bad:  # left out: the others keep consecutive indices
        parts = {
            split: [(p, label, i) for i, (p, label, _) in enumerate(x for x in items if x[0] not in bad)]
            for split, items in parts.items()
        }
    splits = {}
    for split, items in parts.items():
        log.info("Writing %d %s images to %s", len(items), split, join(out, split))
        optimize_split(ImageItem(), items, join(out, split), workers, chunk_bytes, resume)
        splits[split] = len(items)
    meta = {
        "format": FORMAT_VERSION,
        "kind": "image_classification",
        "classes": classes,
        "num_classes": len(classes),
        "splits": splits,
        "source": str(root_path.resolve()),
    }
    write_text(join(out, META_FILE), json.dumps(meta, indent=2))
    return meta


class DetectionItem:
    """``optimize``'s function for one COCO image: encoded bytes plus its target arrays."""

    def __init__(self, image_dir: str, labels: dict[int, int]) -> None:
        self.image_dir, self.labels = image_dir, labels

    def __call__(self, item: tuple[dict, list[dict], int]) -> dict:
        info, anns, index = item
        path = Path(self.image_dir) / info["file_name"]
        width, height = float(info["width"]), float(info["height"])
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes = np.minimum(boxes.clip(min=0), np.asarray([width, height, width, height], dtype=np.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {
            "index": index,
            "image": path.read_bytes(),
            "boxes": boxes[keep],
            "labels": np.asarray([self.labels[a["category_id"]] for a in anns], dtype=np.int64)[keep],
            "iscrowd": np.asarray([int(a.get("iscrowd", 0)) for a in anns], dtype=np.uint8)[keep],
            "orig_size": np.asarray([int(height), int(width)], dtype=np.int64),
            "image_id": int(info["id"]),
            "source": source_bytes(path),
        }


def prepare_coco(
    root: str,
    out: str,
    workers: int,
    chunk_bytes: str,
    resume: bool,
    skip_corrupt: bool = False,
    train_ann: str = "annotations/instances_train2017.json",
    val_ann: str = "annotations/instances_val2017.json",
    train_images: str = "train2017",
    val_images: str = "val2017",
    test_ann: str | None = None,
    test_images: str | None = None,
    keep_category_ids: bool = False,
) -> dict:
    """Shards of a COCO-format dataset (both splits, and a test split with ``test_ann``), labels
    mapped as ``data=coco`` maps them (``keep_category_ids``: the category ids themselves). The
    annotation files and image folders are relative to ``root``; the test images default to the
    validation folder."""
    from vitrain.data.coco import COCODetection, category_labels, read_annotations

    root = Path(root)
    # split -> (annotation file, image folder); the test images default to the validation folder
    paths = {"train": (train_ann, train_images), "val": (val_ann, val_images)}
    if test_ann:
        paths["test"] = (test_ann, test_images or val_images)
    paths = {split: (root / ann, root / images) for split, (ann, images) in paths.items()}
    contents = {split: read_annotations(ann, f"{split}_ann") for split, (ann, _) in paths.items()}
    labels, classes = category_labels(contents["train"]["categories"], not keep_category_ids)
    datasets = {}
    for split, content in contents.items():
        ann, image_dir = paths[split]
        if not image_dir.is_dir():
            raise UserError(f"--{split}-images {image_dir}: no such image folder.")
        datasets[split] = COCODetection(content, image_dir, labels, None, f"--{split}-ann {ann}")
    files = {
        split: [str(paths[split][1] / info["file_name"]) for info in d.images]
        for split, d in datasets.items()
    }
    every = sorted({f for names in files.values() for f in names})
    bad = drop_corrupt(every, workers, skip_corrupt, f"--root {root}")
    splits = {}
    for split, dataset in datasets.items():
        _, image_dir = paths[split]
        kept = [info for info, name in zip(dataset.images, files[split], strict=True) if name not in bad]
        items = [(info, dataset.annotations[info["id"]], i) for i, info in enumerate(kept)]
        log.info("Writing %d %s images to %s", len(items), split, join(out, split))
        optimize_split(
            DetectionItem(str(image_dir), labels), items, join(out, split), workers, chunk_bytes, resume
        )
        splits[split] = len(items)
    meta = {
        "format": FORMAT_VERSION,
        "kind": "detection",
        "classes": classes,
        "num_classes": len(classes),
        "contiguous_ids": not keep_category_ids,
        "splits": splits,
        "source": str(root.resolve()),
    }
    write_text(join(out, META_FILE), json.dumps(meta, indent=2))
    return meta


# ------------------------------------------------------------------ text
class TextItem:
    """``optimize``'s function for one packed sequence of a ``data=text`` token cache (picklable;
    the token file is memory-mapped once per worker)."""

    def __init__(self, cache_path: str, split: str, packing: str, seq_len: int, nsp: bool, seed: int) -> None:
        self.cache_path, self.split, self.packing = cache_path, split, packing
        self.seq_len, self.nsp, self.seed = seq_len, nsp, seed
        self._dataset = None

    def _open(self):
        from vitrain.data.text import BlockDataset, SentencePackDataset
        from vitrain.data.tokenizer import special_ids

        path = Path(self.cache_path)
        meta = json.loads((path / "meta.json").read_text())
        tokens = np.memmap(path / f"{self.split}.bin", dtype=meta["dtype"], mode="r")
        if self.packing == "causal":
            return BlockDataset(tokens, self.seq_len)
        from tokenizers import Tokenizer

        ids = special_ids(Tokenizer.from_file(str(path / "tokenizer.json")), self.packing)
        spans = np.load(path / f"{self.split}.idx.npy")
        return SentencePackDataset(tokens, spans, ids, self.nsp, self.seed)

    def __call__(self, index: int) -> dict:
        if self._dataset is None:
            self._dataset = self._open()
        item = self._dataset[index]
        return {"index": index, **{key: value.numpy().astype(np.int32) for key, value in item.items()}}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_dataset": None}


def prepare_text(
    out: str,
    workers: int,
    chunk_bytes: str,
    resume: bool,
    files: list[str] | None = None,
    tokenizer: str | None = None,
    packing: str = "causal",
    seq_len: int = 128,
    vocab_size: int = 8192,
    cased: bool = False,
    nsp: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    txt_documents: str = "file",
    text_field: str = "text",
    max_chars: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> dict:
    """Tokenize and pack a corpus like ``data=text`` (its arguments; ``cased`` = not
    ``lowercase``, ``files`` None: the embedded corpus), then write each split's sequences as
    shards. The token cache is built in ``cache_dir`` (kept) or a temporary folder (removed)."""
    from vitrain.data.text import TextDataModule

    work_dir = cache_dir or tempfile.mkdtemp(prefix="vitrain-prepare-")
    data = TextDataModule(
        files=files or None, packing=packing, tokenizer=tokenizer, vocab_size=vocab_size,
        lowercase=not cased, seq_len=seq_len, nsp=nsp, val_fraction=val_fraction,
        test_fraction=test_fraction, split_seed=split_seed, txt_documents=txt_documents,
        text_field=text_field, max_chars=max_chars, cache_dir=work_dir, seed=seed,
    )  # fmt: skip
    data.setup()
    splits = {}
    for split in (*SPLITS, "test") if data.test_set is not None else SPLITS:
        dataset = getattr(data, f"{split}_set")
        fn = TextItem(str(data.cache_path), split, packing, seq_len, nsp, seed)
        log.info("Writing %d %s sequences to %s", len(dataset), split, join(out, split))
        optimize_split(fn, list(range(len(dataset))), join(out, split), workers, chunk_bytes, resume)
        splits[split] = len(dataset)
    cache_meta = data.meta
    meta = {
        "format": FORMAT_VERSION,
        "kind": "text",
        "packing": packing,
        "seq_len": seq_len,
        "nsp": nsp,
        "vocab_size": data.vocab_size,
        "special_ids": data.special_ids,
        "splits": splits,
        "tokens": {split: cache_meta["splits"][split]["tokens"] for split in splits},
        "source": str(files) if files else "embedded corpus",
    }
    write_text(join(out, "tokenizer.json"), data.tokenizer.to_str())
    write_text(join(out, META_FILE), json.dumps(meta, indent=2))
    if not cache_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return meta


# ------------------------------------------------------------------ shared
def optimize_split(fn, inputs: Sequence, out: str, workers: int, chunk_bytes: str, resume: bool) -> None:
    """``litdata.optimize`` one split: parallel, with a progress bar, resumable with ``resume``."""
    from litdata import optimize

    if not resume and not is_remote(out) and Path(out).exists():
        shutil.rmtree(out)  # a fresh conversion replaces an old one
    optimize(
        fn=fn,
        inputs=list(inputs),
        output_dir=out,
        chunk_bytes=chunk_bytes,
        num_workers=max(1, min(workers, len(inputs))),
        use_checkpoint=resume,
        mode="overwrite" if not resume and is_remote(out) else None,
        # fork: workers start in milliseconds; litdata's default (spawn) re-imports torch in each
        start_method="fork" if sys.platform != "win32" else None,
        reorder_files=False,  # keep the items in order: shards are then reproducible
        verbose=True,
    )
