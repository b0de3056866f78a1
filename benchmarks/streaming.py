"""Streaming shards: the streaming loaders against the folder loader and the raw tokenizer.

Images: the ``data=imagenet_stream`` loader (litdata shards written by ``vitrain.prepare`` from
the same generated JPEGs) against the ImageFolder loader, images/s. Text: the ``data=text_stream``
loader's tokens/s against the raw ``tokenizers`` batch encoder on the same corpus (what
tokenizing on the fly would cost).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import Ratio, module_args
from benchmarks.pipeline import images_per_s, write_tree
from vitrain.data import ImageFolderDataModule

TITLE = "streaming shards: litdata loaders against the ImageFolder loader and the raw tokenizer"


def compare_streaming(per_class: int, image_size: int, batch: int, workers: int, repeats: int) -> dict:
    """images/s of the streaming loader and of the ImageFolder loader, whole epochs alternating
    (A B B A ...), on the same JPEGs with the same transform settings; medians."""
    from vitrain.data import StreamingImageDataModule
    from vitrain.tools.prepare import main as prepare

    with tempfile.TemporaryDirectory() as tmp:
        root, shards = Path(tmp) / "tree", Path(tmp) / "shards"
        write_tree(root, per_class)
        prepare(["images", "--root", str(root), "--out", str(shards), "--workers", "2"])
        common = dict(num_classes=10, image_size=image_size, batch_size=batch, num_workers=workers)
        folder = ImageFolderDataModule(str(root), persistent_workers=False, **common)
        stream = StreamingImageDataModule(str(shards), **common)
        for dm in (folder, stream):
            dm.setup("fit")
            images_per_s(dm.train_dataloader())  # untimed warm-up epoch
        rates: dict[str, list[float]] = {"stream": [], "folder": []}
        ratios = []
        for repeat in range(repeats):
            sides = ("stream", "folder") if repeat % 2 == 0 else ("folder", "stream")
            rate = {
                side: images_per_s((stream if side == "stream" else folder).train_dataloader())
                for side in sides
            }
            for side in sides:
                rates[side].append(rate[side])
            ratios.append(rate["stream"] / rate["folder"])
    return {
        "stream": statistics.median(rates["stream"]),
        "folder": statistics.median(rates["folder"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def compare_text(seq_len: int, batch: int, max_chars: int | None, repeats: int) -> dict:
    """Tokens/s delivered by the text_stream loader against ``Tokenizer.encode_batch`` on the same
    documents (the shards' own tokenizer), alternating; medians."""
    from tokenizers import Tokenizer

    from vitrain.data import StreamingTextDataModule
    from vitrain.data.text import embedded_documents
    from vitrain.tools.prepare import main as prepare

    docs = embedded_documents()
    if max_chars:
        docs = [d for d in docs if len(d) < max_chars][:40]  # quick: 40 short documents
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for i, doc in enumerate(docs):
            (corpus / f"{i:04d}.txt").write_text(doc)
        shards = Path(tmp) / "shards"
        prepare(["text", "--files", str(corpus), "--out", str(shards), "--seq-len", str(seq_len), "--workers", "2",
                 "--vocab-size", "4096", "--val-fraction", "0.05"])  # fmt: skip
        data = StreamingTextDataModule(str(shards), batch_size=batch)
        data.setup()
        tok = Tokenizer.from_file(str(shards / "tokenizer.json"))

        def stream_rate() -> float:
            start, count = time.perf_counter(), 0
            for b in data.train_dataloader():
                count += b["tokens"][:, :-1].numel()
            return count / (time.perf_counter() - start)

        def encode_rate() -> float:
            start = time.perf_counter()
            count = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
            return count / (time.perf_counter() - start)

        stream_rate(), encode_rate()  # warm-up
        rates: dict[str, list[float]] = {"stream": [], "encode": []}
        for repeat in range(repeats):
            for side in ("stream", "encode") if repeat % 2 == 0 else ("encode", "stream"):
                rates[side].append(stream_rate() if side == "stream" else encode_rate())
    ratios = [a / b for a, b in zip(rates["stream"], rates["encode"], strict=True)]
    return {
        "stream": statistics.median(rates["stream"]),
        "encode": statistics.median(rates["encode"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "documents": len(docs),
    }


def main(argv: list[str] | None = None) -> list[Ratio]:
    args = module_args(argv, __doc__)
    stream_spec = dict(per_class=32, image_size=224, batch=32, workers=2, repeats=5)
    text_spec = dict(seq_len=128, batch=32, max_chars=None, repeats=5)
    if args.quick:
        stream_spec = dict(per_class=4, image_size=64, batch=8, workers=0, repeats=2)
        text_spec = dict(seq_len=32, batch=8, max_chars=4000, repeats=2)
    images = compare_streaming(**stream_spec)
    print(f"    {stream_spec['per_class'] * 10} random 128 px JPEGs as litdata shards (vitrain.prepare images), timm "
          f"train transform at {stream_spec['image_size']} px, batch {stream_spec['batch']}, "
          f"num_workers={stream_spec['workers']}, {stream_spec['repeats']} alternating epochs")  # fmt: skip
    print(
        "    stream = data=imagenet_stream (StreamingDataLoader); folder = data=imagenet (ImageFolder) on the same files"
    )
    print(f"    stream {images['stream']:.0f} images/s, folder {images['folder']:.0f} images/s")
    print(f"    streaming / ImageFolder images/s = {images['ratio']:.3f} (goal >= 1 on local disk; epochs: "
          + ", ".join(f"{r:.3f}" for r in images["ratios"]) + ")")  # fmt: skip
    text = compare_text(**text_spec)
    print(f"    text: {text['documents']} CPython help documents, GPT blocks of {text_spec['seq_len']} tokens, batch "
          f"{text_spec['batch']}; stream = data=text_stream loader, tokens delivered; encode = the shards' tokenizer")  # fmt: skip
    print("    (tokenizers Tokenizer.encode_batch, its Rust threads) on the same documents, tokens produced")
    print(
        f"    stream {text['stream'] / 1e6:.2f} M tokens/s, encode_batch {text['encode'] / 1e6:.2f} M tokens/s"
    )
    print(f"    text_stream / encode_batch tokens/s = {text['ratio']:.3f} (runs: "
          + ", ".join(f"{r:.3f}" for r in text["ratios"]) + ")")  # fmt: skip
    return [
        Ratio("stream_images", images["ratio"], "images/s streaming shards / ImageFolder", ">= 1.0"),
        Ratio("stream_text", text["ratio"], "tokens/s text_stream loader / tokenizers encode_batch"),
    ]


if __name__ == "__main__":
    main()
