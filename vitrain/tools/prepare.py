"""Write streaming shards (litdata) for ``data=imagenet_stream`` and ``data=text_stream``.

    python -m vitrain.prepare images --root /data/imagenet --out /data/imagenet_shards
    python -m vitrain.prepare images --root /data/imagenet --out s3://bucket/imagenet_shards
    python -m vitrain.prepare text --files /data/owt --tokenizer gpt2/tokenizer.json --seq-len 1024 --out DIR

Each split (train, val, and a held-out test split when the source has one: ``ROOT/test/``,
``--test-ann`` or ``--test-fraction``) becomes ``OUT/<split>/`` (litdata's ``index.json`` +
``chunk-*.bin``), written by ``litdata.optimize`` in parallel worker processes with a progress
bar. ``--resume`` continues an interrupted conversion from the chunks already written (litdata's
``use_checkpoint``).
``OUT/vitrain.json`` records what the DataModules need: the kind of data, the class names (images)
or the packing, sequence length and special token ids (text, with ``OUT/tokenizer.json``).

* images: an ImageFolder tree ``ROOT/{train,val[,test]}/<class>/<image>``. Each item is ``{"index",
  "label", "image", "source"}`` with the image file's bytes as they are (JPEG/PNG stay encoded:
  the loader decodes them, no quality is lost and shards stay small) and the source file's path.
* COCO-format detection (``ROOT/annotations/`` exists, or ``--coco``): each image's bytes with its
  boxes (absolute xyxy, clipped, empty ones dropped), labels (category ids mapped as ``data=coco``
  does), crowd flags, original size, image id and the source file's path, for ``data=coco_stream``.
* Every image is decoded once before anything is written (in ``--workers`` processes), as the
  loader will decode it: a file that does not decode stops the conversion with the list of bad
  files, or with ``--skip-corrupt`` is left out (with a count and the list).
* text: the corpus is tokenized and packed exactly as ``data=text`` does (same document split,
  tokenizer training when none is given, GPT blocks of ``seq_len + 1`` tokens or BERT
  sentence-packed sequences), then each sequence is one item ``{"index", <token arrays>}``.

This is a command-line tool, not a Hydra entry point: it only writes files, with the library
``vitrain.data.write_shards``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vitrain.data.write_shards import prepare_coco, prepare_images, prepare_text
from vitrain.errors import UserError, user_message

log = logging.getLogger("vitrain.prepare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vitrain.prepare", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    sub = parser.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder or object-store URI (s3://bucket/path)")
    common.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel writer processes")
    common.add_argument("--chunk-bytes", default="64MB", help="size of each shard file")
    common.add_argument("--resume", action="store_true", help="continue an interrupted conversion")

    images = sub.add_parser(
        "images",
        parents=[common],
        help="an ImageFolder tree ROOT/{train,val}/<class>/ or a COCO-format dataset",
        description="Every image is decoded once first (in --workers processes), as the loader will: "
        "files that do not decode stop the conversion, listed by path (nothing is written), unless "
        "--skip-corrupt leaves them out (a count and the list are logged).",
    )
    images.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave out images that do not decode (default: refuse, listing them)",
    )
    images.add_argument("--root", required=True, help="ImageFolder root with train/ and val/, or a COCO root")
    images.add_argument(
        "--coco", action="store_true", help="COCO-format detection (default when ROOT/annotations/ exists)"
    )
    images.add_argument(
        "--train-ann", default="annotations/instances_train2017.json", help="COCO, relative to ROOT"
    )
    images.add_argument(
        "--val-ann", default="annotations/instances_val2017.json", help="COCO, relative to ROOT"
    )
    images.add_argument("--train-images", default="train2017", help="COCO image folder, relative to ROOT")
    images.add_argument("--val-images", default="val2017", help="COCO image folder, relative to ROOT")
    images.add_argument(
        "--test-ann", default=None, help="COCO: a held-out test split's annotations (none: no test split)"
    )
    images.add_argument("--test-images", default=None, help="COCO: its image folder (default: --val-images)")
    images.add_argument(
        "--keep-category-ids", action="store_true", help="COCO: labels = category ids (DETR's 91)"
    )

    text = sub.add_parser("text", parents=[common], help=".txt/.jsonl corpora, tokenized and packed")
    text.add_argument(
        "--files", nargs="*", default=None, help=".txt/.jsonl files or folders (none: embedded corpus)"
    )
    text.add_argument(
        "--tokenizer", default=None, help="tokenizer.json / vocab.json / vocab.txt (none: train one)"
    )
    text.add_argument(
        "--packing", choices=("causal", "masked"), default="causal", help="GPT blocks or BERT sentences"
    )
    text.add_argument("--seq-len", type=int, default=128)
    text.add_argument("--vocab-size", type=int, default=8192, help="size of a trained tokenizer")
    text.add_argument("--nsp", action="store_true", help="BERT sentence pairs with next-sentence labels")
    text.add_argument(
        "--cased", action="store_true", help="keep case (BERT WordPiece lower-cases by default)"
    )
    text.add_argument("--val-fraction", type=float, default=0.1)
    text.add_argument(
        "--test-fraction", type=float, default=0.1, help="documents held out as the test split (0: none)"
    )
    text.add_argument("--split-seed", type=int, default=0)
    text.add_argument("--txt-documents", choices=("file", "paragraphs"), default="file")
    text.add_argument("--text-field", default="text")
    text.add_argument("--max-chars", type=int, default=None)
    text.add_argument("--seed", type=int, default=0, help="BERT packing / NSP pairing seed")
    text.add_argument("--cache-dir", default=None, help="keep the intermediate token cache here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run the command line; returns the metadata written (a user mistake exits with status 1)."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    args = build_parser().parse_args(argv)
    writing = {
        "out": args.out,
        "workers": args.workers,
        "chunk_bytes": args.chunk_bytes,
        "resume": args.resume,
    }
    try:
        if args.what == "text":
            meta = prepare_text(
                **writing, files=args.files, tokenizer=args.tokenizer, packing=args.packing,
                seq_len=args.seq_len, vocab_size=args.vocab_size, cased=args.cased, nsp=args.nsp,
                val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                split_seed=args.split_seed, txt_documents=args.txt_documents, text_field=args.text_field,
                max_chars=args.max_chars, seed=args.seed, cache_dir=args.cache_dir,
            )  # fmt: skip
        elif args.coco or (Path(args.root) / "annotations").is_dir():
            meta = prepare_coco(
                args.root, **writing, skip_corrupt=args.skip_corrupt, train_ann=args.train_ann,
                val_ann=args.val_ann, train_images=args.train_images, val_images=args.val_images,
                test_ann=args.test_ann, test_images=args.test_images,
                keep_category_ids=args.keep_category_ids,
            )  # fmt: skip
        else:
            meta = prepare_images(args.root, **writing, skip_corrupt=args.skip_corrupt)
    except UserError as err:
        log.error(user_message(err))
        sys.exit(1)
    log.info("Wrote %s", ", ".join(f"{n} {split}" for split, n in meta["splits"].items()))
    return meta


if __name__ == "__main__":
    main()
