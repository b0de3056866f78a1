"""Text corpora for language-model pretraining: tokenized once, memory-mapped, packed.

``TextDataModule`` reads documents from ``.txt`` / ``.jsonl`` files (or the embedded corpus),
splits them into train / validation / test by document, tokenizes each split once into a
memory-mapped token file and serves

* ``packing=causal`` (GPT): documents joined by the end-of-text token, cut into blocks of
  ``seq_len + 1`` tokens; a batch is ``{"tokens": (B, seq_len + 1) int64}``;
* ``packing=masked`` (BERT): consecutive sentences of one document packed into sequences of
  at most ``seq_len`` tokens, ``[CLS] ... [SEP]`` (with ``nsp``: ``[CLS] A [SEP] B [SEP]``, half
  of the B segments taken from another document); a batch is ``{"input_ids", "token_type_ids",
  "attention_mask"}`` ``(B, T)`` padded to its longest sequence, plus ``"next_sentence_label"``
  ``(B,)`` with ``nsp`` (0: B follows A, 1: B is random). Masking is the task's job.

The cache lives in ``cache_dir/<key>/`` where the key hashes the corpus files (paths, sizes,
modification times), the tokenizer settings (or the tokenizer file's content), the split and the
packing: a second run reuses it, a changed corpus builds a new one. It holds ``tokenizer.json``
(trained on the training documents when no ``tokenizer`` file is given), ``{train,val,test}.bin``
(uint16 tokens, uint32 for vocabularies over 65535), the packing index ``{train,val,test}.idx.npy``
and ``meta.json`` (written last: a cache without it is incomplete and rebuilt).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vitrain.data.base import ShardedDataModule
from vitrain.data.cache import NodeCache, fingerprint
from vitrain.data.tokenizer import (
    PACKINGS,
    check_special_tokens,
    load_tokenizer,
    special_ids,
    tokenizer_files,
    train_tokenizer,
)
from vitrain.errors import UserError, require_choice, require_int
from vitrain.hub import resolve_tokenizer

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl")
CACHE_VERSION = 2  # 2: a test split
# how to give a split more text
_MORE_TEXT = {
    "train": "lower data.val_fraction / data.test_fraction",
    "val": "raise data.val_fraction",
    "test": "raise data.test_fraction (0: no test split)",
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ------------------------------------------------------------------ reading documents
def embedded_documents() -> list[str]:
    """The help texts that ship inside CPython (``pydoc_data.topics``): ~80 documents, ~0.5 MB."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def held_out_split(count: int, val_fraction: float, test_fraction: float, seed: int) -> dict[int, str]:
    """``{document index: "val" or "test"}`` of ``count`` documents (at least 2 + the test ones): a
    ``seed`` permutation holds out ``val_fraction`` of them for validation (at least one), then
    ``test_fraction`` for the test split (at least one when > 0); the others are training documents.
    ``data=conll``'s embedded task splits the same help topics with it."""
    n_test = max(1, int(round(test_fraction * count))) if test_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(count).tolist()
    n_val = min(max(1, int(round(val_fraction * count))), count - 1 - n_test)
    held = {i: "val" for i in order[:n_val]}
    held.update({i: "test" for i in order[n_val : n_val + n_test]})
    return held


def corpus_files(files: str | list[str] | tuple[str, ...]) -> list[Path]:
    """The ``.txt`` / ``.jsonl`` files named by ``data.files`` (files or folders, searched recursively)."""
    entries = [files] if isinstance(files, str | Path) else list(files)
    out: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
            if not found:
                raise UserError(
                    f"data.files={entry}: the folder holds no {' or '.join(TEXT_SUFFIXES)} files."
                )
            out += found
        elif path.is_file():
            if path.suffix.lower() not in TEXT_SUFFIXES:
                raise UserError(f"data.files={entry}: not a .txt or .jsonl file.")
            out.append(path)
        else:
            raise UserError(
                f"data.files={entry}: no such file or folder. Give .txt/.jsonl files or a folder."
            )
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"data.files: cannot read {path}: not UTF-8 text ({err.reason} at byte {err.start})."
        ) from err
    except OSError as err:
        raise UserError(
            f"data.files: cannot read {path} ({err.strerror or err}): fix or remove the file."
        ) from err


def file_documents(path: Path, txt_documents: str, text_field: str) -> Iterator[str]:
    """The documents of one file: a ``.txt`` file is one document (``txt_documents=paragraphs``:
    one per blank-line separated paragraph); a ``.jsonl`` file has one per line (its ``text_field``)."""
    text = _read_text(path)
    if path.suffix.lower() == ".txt":
        yield from re.split(r"\n\s*\n", text) if txt_documents == "paragraphs" else [text]
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            yield record[text_field] if isinstance(record, dict) else record
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(
                f"data.files: {path} line {number} is not a JSON object with a {text_field!r} string "
                f"({type(err).__name__}): fix the line or set data.text_field."
            ) from err


def sentences(document: str) -> list[str]:
    """A document as sentences: paragraphs (blank-line separated), each split after . ! or ?"""
    out = []
    for paragraph in re.split(r"\n\s*\n", document):
        text = " ".join(paragraph.split())
        out += [s for s in _SENTENCE_END.split(text) if s]
    return out


# ------------------------------------------------------------------ datasets
class BlockDataset(Dataset):
    """Items ``{"tokens": tokens[i * block : (i + 1) * block + 1]}``: ``block + 1`` consecutive tokens."""

    def __init__(self, tokens: np.ndarray, block: int) -> None:
        self.tokens, self.block = tokens, block

    def __len__(self) -> int:
        return max((len(self.tokens) - 1) // self.block, 0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = index * self.block
        return {"tokens": torch.from_numpy(self.tokens[start : start + self.block + 1].astype(np.int64))}


class SentencePackDataset(Dataset):
    """BERT sequences from token spans ``(start, mid, end, doc)`` of the token file.

    Without NSP: ``[CLS] tokens[start:end] [SEP]``, token types 0. With NSP: ``[CLS] A [SEP] B
    [SEP]`` with ``A = tokens[start:mid]``; B is ``tokens[mid:end]`` (label 0) or, for half of
    the items (fixed by ``seed`` and the index), as many tokens from another document (label 1).
    """

    def __init__(
        self, tokens: np.ndarray, spans: np.ndarray, ids: dict[str, int], nsp: bool, seed: int
    ) -> None:
        self.tokens, self.spans, self.ids, self.nsp, self.seed = tokens, spans, ids, nsp, seed

    def __len__(self) -> int:
        return len(self.spans)

    def _take(self, start: int, end: int) -> list[int]:
        return self.tokens[start:end].astype(np.int64).tolist()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start, mid, end, doc = (int(v) for v in self.spans[index])
        cls, sep = self.ids["cls"], self.ids["sep"]
        if not self.nsp:
            ids = [cls, *self._take(start, end), sep]
            return {"input_ids": torch.tensor(ids), "token_type_ids": torch.zeros(len(ids), dtype=torch.long)}
        a = self._take(start, mid)
        rng = np.random.default_rng((self.seed, index))
        label = int(rng.random() < 0.5)
        b = self._take(mid, end)
        if label:
            other = int(rng.integers(len(self.spans)))
            if int(self.spans[other][3]) == doc:  # same document: take the next one that is not
                others = np.flatnonzero(self.spans[:, 3] != doc)
                other = int(others[other % len(others)]) if len(others) else -1
            if other < 0:
                label = 0
            else:
                o_start, _, o_end, _ = (int(v) for v in self.spans[other])
                b = self._take(o_start, min(o_end, o_start + max(end - mid, 1)))
        ids = [cls, *a, sep, *b, sep]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        return {
            "input_ids": torch.tensor(ids),
            "token_type_ids": torch.tensor(types),
            "next_sentence_label": torch.tensor(label),
        }


def pad_collate(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of BERT items to the longest; adds ``attention_mask`` (True: a real token)."""
    length = max(len(item["input_ids"]) for item in items)
    batch_size = len(items)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    types = torch.zeros(batch_size, length, dtype=torch.long)
    mask = torch.zeros(batch_size, length, dtype=torch.bool)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        types[row, :n] = item["token_type_ids"]
        mask[row, :n] = True
    batch = {"input_ids": input_ids, "token_type_ids": types, "attention_mask": mask}
    if "next_sentence_label" in items[0]:
        batch["next_sentence_label"] = torch.stack([item["next_sentence_label"] for item in items])
    return batch


def pack_sentences(lengths: np.ndarray, docs: np.ndarray, budget: int, nsp: bool, seed: int) -> np.ndarray:
    """Token spans ``(start, mid, end, doc)`` ``(N, 4)`` int64 of sequences of at most ``budget`` tokens.

    Consecutive sentences (``lengths``, document ids ``docs``) of one document are packed
    greedily; a sentence longer than ``budget`` is cut into pieces. ``mid`` is a sentence
    boundary inside the span (chosen with ``seed``) when ``nsp``, else ``end``.
    """
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    spans: list[tuple[int, int, int, int]] = []
    cuts: list[int] = []  # sentence boundaries of the open span
    span_start, span_doc = 0, -1

    def close(end: int) -> None:
        if end <= span_start:
            return
        inner = [c for c in cuts if span_start < c < end]
        if nsp:
            mid = int(rng.choice(inner)) if inner else span_start + (end - span_start) // 2
            mid = mid if mid > span_start else end
        else:
            mid = end
        spans.append((span_start, mid, end, span_doc))

    for i, doc in enumerate(docs.tolist()):
        s, e = int(starts[i]), int(starts[i + 1])
        if doc != span_doc or e - span_start > budget:
            close(s)
            span_start, span_doc, cuts = s, doc, []
        while e - span_start > budget:  # a sentence longer than the budget: cut into pieces
            close(span_start + budget)
            span_start, cuts = span_start + budget, []
        cuts.append(s)
    close(int(starts[-1]))
    return np.asarray(spans, dtype=np.int64).reshape(-1, 4)


# ------------------------------------------------------------------ the DataModule
class TextDataModule(ShardedDataModule):
    """Tokenized, packed text for GPT (``packing=causal``) or BERT (``packing=masked``).

    Args:
        files: ``.txt`` / ``.jsonl`` files or folders of them (one path or a list); None: the
            embedded corpus (CPython's help topics, no download).
        packing: ``causal`` or ``masked``; ``conf/data/text.yaml`` takes it from the model's task.
        tokenizer: a ``tokenizer.json``, GPT-2 ``vocab.json`` (+ ``merges.txt``) or BERT
            ``vocab.txt``, a folder with one (a Hugging Face model folder), or a hub id
            (``gpt2``, ``bert-base-uncased``: read from the Hugging Face cache, fetched when
            online); None trains one on the training documents.
        vocab_size: size of a trained tokenizer's vocabulary.
        lowercase: BERT WordPiece lower-cases (uncased models).
        seq_len: tokens per sequence (GPT: the context; BERT: the maximum, specials included).
        nsp: BERT sentence pairs with next-sentence labels.
        val_fraction: share of the documents held out for validation (at least one), chosen
            with ``split_seed``.
        split_seed: seed of the draw of the held-out documents.
        test_fraction: share of the documents held out as the test split (0: none), disjoint
            from the validation documents; evaluated once after training.
        txt_documents: ``file`` (a .txt file is one document) or ``paragraphs``.
        text_field: the text of a .jsonl record.
        max_chars: read at most this many characters of the corpus (quick runs); None: all.
        cache_dir: where token files and tokenizers are cached.
        cache_wait_s: how long the other processes of a node wait for its local rank zero to
            build a missing cache before they fail.
        batch_size: samples per batch and process.
        require_files: fail unless ``files`` is given (recipes for real corpora set it).
        **loader_kwargs: ``num_workers``, ``pin_memory``, ``persistent_workers``, ``seed`` (see
            ``vitrain.data.base.DataModule``).
    """

    # network sizes the data decides when the config leaves them null (see model_sizes)
    model_size_keys = ("vocab_size",)

    kind = "text"

    def __init__(
        self,
        files: str | list[str] | None = None,
        packing: str = "causal",
        tokenizer: str | None = None,
        vocab_size: int = 8192,
        lowercase: bool = True,
        seq_len: int = 128,
        nsp: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        txt_documents: str = "file",
        text_field: str = "text",
        max_chars: int | None = None,
        cache_dir: str = "data/text_cache",
        cache_wait_s: float = 3600.0,
        batch_size: int = 32,
        require_files: bool = False,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        if require_files and files in (None, "", []):
            raise UserError(
                "data.files is required here (a recipe for a real corpus): data.files=<.txt/.jsonl files or "
                "folder>. Leave it out only with data.require_files=false (the embedded corpus)."
            )
        require_choice("data.packing", packing, PACKINGS, "it follows the model")
        require_choice("data.txt_documents", txt_documents, ("file", "paragraphs"))
        self.hold_out(val_fraction, test_fraction, split_seed)
        require_int("data.seq_len", seq_len, minimum=2 if packing == "causal" else 8)
        if nsp and packing != "masked":
            raise UserError("data.nsp=true needs a BERT model (packing=masked); set data.nsp=false.")
        self.files = None if files in (None, "", []) else files
        # a hub id (gpt2, bert-base-uncased) becomes its cached snapshot folder
        tokenizer = resolve_tokenizer(str(tokenizer)) if tokenizer else None
        self.packing, self.tokenizer_file, self.vocab_size_wanted = packing, tokenizer, vocab_size
        self.lowercase, self.seq_len, self.nsp = lowercase, seq_len, nsp
        self.txt_documents, self.text_field, self.max_chars = txt_documents, text_field, max_chars
        self.cache_dir = Path(cache_dir)
        self.cache_wait_s = cache_wait_s
        self.tokenizer = None
        self.cache_path: Path | None = None
        self.meta: dict = {}  # the cache's meta.json
        self.cache_built = False  # whether this process tokenized the corpus (False: reused)

    # -------------------------------------------------------------- what the model needs
    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size (prepares the tokenizer on first use)."""
        self.prepare()
        return self.tokenizer.get_vocab_size()

    def model_sizes(self) -> dict[str, int]:
        """Network sizes known only from the data: ``{"vocab_size": ...}``."""
        return {"vocab_size": self.vocab_size}

    @property
    def special_ids(self) -> dict[str, int]:
        self.prepare()
        return special_ids(self.tokenizer, self.packing)

    # -------------------------------------------------------------- the cache
    def _documents(self) -> Iterator[str]:
        """Every non-empty document of the corpus, in a fixed order, capped by ``max_chars``."""
        if self.files is None:
            source: Iterator[str] = iter(embedded_documents())
        else:
            source = (
                doc
                for path in corpus_files(self.files)
                for doc in file_documents(path, self.txt_documents, self.text_field)
            )
        chars = 0
        for doc in source:
            if not doc.strip():
                continue
            if self.max_chars is not None and chars + len(doc) > self.max_chars:
                if chars == 0:
                    yield doc[: self.max_chars]
                return
            chars += len(doc)
            yield doc

    def _fingerprint(self) -> str:
        """Hash of everything the cache depends on (see :func:`vitrain.data.cache.fingerprint`)."""
        settings = [CACHE_VERSION, self.packing, self.vocab_size_wanted, self.lowercase, self.val_fraction,
                    self.test_fraction, self.split_seed, self.txt_documents, self.text_field,
                    self.max_chars]  # fmt: skip
        if self.packing == "masked":
            settings += [self.seq_len, self.nsp, self.seed]  # the packed spans depend on them
        if self.files is None:
            settings.append(f"embedded pydoc topics {sys.version}")
        return fingerprint(settings, [] if self.files is None else corpus_files(self.files),
                           tokenizer_files(self.tokenizer_file))  # fmt: skip

    def prepare(self) -> None:
        """Build (or find) the cache and load the tokenizer; cheap after the first call."""
        if self.tokenizer is not None:
            return
        if self.tokenizer_file:  # check the file before reading the corpus
            load_tokenizer(self.tokenizer_file, self.packing, self.lowercase)
        cache = NodeCache(self.cache_dir, f"{self.packing}-{self._fingerprint()}", self.cache_wait_s)
        self.cache_built = cache.get(self._build)
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(cache.path / "tokenizer.json"))
        check_special_tokens(self.tokenizer, self.packing, str(cache.path / "tokenizer.json"))
        self.cache_path, self.meta = cache.path, cache.meta()

    def _held_out_documents(self) -> dict[int, str]:
        """``{document index: "val" or "test"}``: a ``split_seed`` permutation holds out
        ``val_fraction`` of the documents for validation (at least one), then ``test_fraction``
        for the test split (at least one when > 0). Reads the corpus once, keeping nothing."""
        count = sum(1 for _ in self._documents())
        where = "the embedded corpus" if self.files is None else f"data.files={self.files}"
        if count == 0:
            raise UserError(f"{where} holds no text (empty corpus): add documents with text.")
        n_test = max(1, int(round(self.test_fraction * count))) if self.test_fraction > 0 else 0
        if count < 2 + n_test:
            raise UserError(
                f"{where} holds {count} document(s), too few for a train/validation"
                f"{'/test' if n_test else ''} split by document: give several files, a .jsonl file, "
                "or data.txt_documents=paragraphs" + (", or data.test_fraction=0." if n_test else ".")
            )
        return held_out_split(count, self.val_fraction, self.test_fraction, self.split_seed)

    def _split_documents(self, held: dict[int, str], split: str) -> Iterator[str]:
        return (doc for i, doc in enumerate(self._documents()) if held.get(i, "train") == split)

    def _build(self, folder: Path) -> dict:
        """Tokenize the corpus into the empty ``folder``; returns the cache's ``meta.json`` content.

        Documents are streamed: the corpus is read once to split it, once to train the
        tokenizer (when none is given) and once per split to tokenize it, in chunks."""
        held = self._held_out_documents()
        n_test = sum(1 for split in held.values() if split == "test")
        log.info(
            "Tokenizing the corpus (%d validation, %d test documents) into %s",
            len(held) - n_test,
            n_test,
            self.cache_dir,
        )
        if self.tokenizer_file:
            tok = load_tokenizer(self.tokenizer_file, self.packing, self.lowercase)
        else:
            train_docs = self._split_documents(held, "train")
            tok = train_tokenizer(train_docs, self.packing, self.vocab_size_wanted, self.lowercase)
        dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.uint32
        tok.save(str(folder / "tokenizer.json"))
        sizes = {}
        for split in ("train", "val", "test"):
            if split == "test" and not n_test:
                continue
            with open(folder / f"{split}.bin", "wb") as out:
                docs = self._split_documents(held, split)
                count, tokens, index = self._tokenize(tok, docs, out, dtype)
            np.save(folder / f"{split}.idx.npy", index)
            sizes[split] = {"documents": count, "tokens": tokens, "index_rows": int(len(index))}
        return {"dtype": np.dtype(dtype).name, "vocab_size": tok.get_vocab_size(), "splits": sizes}

    def _tokenize(self, tok, docs: Iterator[str], out, dtype) -> tuple[int, int, np.ndarray]:
        """Write the tokens of ``docs`` to the open file ``out``; returns ``(documents, tokens,
        packing index)`` (causal: document starts; masked: spans, see :func:`pack_sentences`)."""
        eot = tok.token_to_id("<|endoftext|>")
        count, position = 0, 0
        index_parts: list[np.ndarray] = []  # causal: document starts; masked: sentence lengths
        doc_parts: list[np.ndarray] = []  # masked: the document of each sentence
        for chunk in _chunks(docs, 1024):
            if self.packing == "causal":
                encoded = [
                    np.asarray([*e.ids, eot]) for e in tok.encode_batch(chunk, add_special_tokens=False)
                ]
                lengths = np.asarray([len(e) for e in encoded], dtype=np.int64)
                index_parts.append(position + np.concatenate([[0], np.cumsum(lengths)[:-1]]))
            else:
                split = [sentences(doc) for doc in chunk]
                flat = [s for doc in split for s in doc]
                owner = np.repeat(np.arange(count, count + len(chunk)), [len(doc) for doc in split])
                encoded = [np.asarray(e.ids) for e in tok.encode_batch(flat, add_special_tokens=False)]
                lengths = np.asarray([len(e) for e in encoded], dtype=np.int64)
                index_parts.append(lengths[lengths > 0])
                doc_parts.append(owner[lengths > 0])
            if encoded:
                np.concatenate(encoded).astype(dtype).tofile(out)
            position += int(lengths.sum())
            count += len(chunk)
        if self.packing == "causal":
            return count, position, np.concatenate(index_parts or [np.zeros(0, np.int64)])
        if not index_parts or position == 0:
            return count, position, np.zeros((0, 4), dtype=np.int64)
        budget = self.seq_len - (3 if self.nsp else 2)
        spans = pack_sentences(
            np.concatenate(index_parts), np.concatenate(doc_parts), budget, self.nsp, self.seed
        )
        return count, position, spans

    # -------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare()
        for split in self.meta["splits"]:
            tokens = np.memmap(self.cache_path / f"{split}.bin", dtype=self.meta["dtype"], mode="r")
            index = np.load(self.cache_path / f"{split}.idx.npy")
            if self.packing == "causal":
                dataset: Dataset = BlockDataset(tokens, self.seq_len)
            else:
                dataset = SentencePackDataset(tokens, index, self.special_ids, self.nsp, self.seed)
            if len(dataset) == 0:
                raise UserError(
                    f"the {split} split has {len(tokens)} tokens, not one sequence of data.seq_len="
                    f"{self.seq_len}: lower data.seq_len, {_MORE_TEXT[split]} or add text."
                )
            setattr(self, f"{split}_set", dataset)
        log.info(
            "Text data: %d train / %d val / %d test sequences of <= %d tokens, vocabulary %d (%s)",
            len(self.train_set), len(self.val_set), len(self.test_set) if self.test_set else 0,
            self.seq_len, self.vocab_size, self.cache_path,
        )  # fmt: skip

    @property
    def collate_fn(self):
        """Padding to the longest sequence for BERT's packed sentences; fixed blocks need none."""
        return _PadCollate(self.special_ids["pad"]) if self.packing == "masked" else None

    def predict_dataloader(self) -> DataLoader:
        raise UserError(
            "mode=predict classifies images; for text use python -m vitrain.generate <checkpoint> --prompt ..."
        )


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _PadCollate:
    """Picklable ``pad_collate`` with a fixed pad id (for worker processes)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return pad_collate(items, self.pad_id)
