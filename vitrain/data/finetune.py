"""Fine-tuning data for pretrained language models: tokenizer, encoded-example cache, padding.

What every fine-tuning DataModule shares (sequence classification ``data=glue`` /
``text_classification`` / the embedded task, token classification, instruction tuning):

* **the tokenizer** (:func:`resolve_tokenizer_source`): ``data.tokenizer`` (a ``tokenizer.json``,
  a GPT-2 ``vocab.json`` + ``merges.txt``, a BERT ``vocab.txt``, a folder with one, or a hub id,
  as ``data=text``); else the tokenizer of the network's starting point: the ``tokenizer.json``
  that a vitrain pretraining checkpoint carries (``model.net.init_from``; ``data=text`` trained
  it and the language tasks store it in every checkpoint) or the one beside Hugging Face weights
  (``model.net.hf_weights``: a hub id or a model folder); else a new one trained on the training
  texts (``data.vocab_size``; for runs from scratch). A GPT tokenizer gets GPT-1's start,
  delimiter and extract tokens (:data:`GPT1_TOKENS`) when it lacks them: ids at the end of the
  vocabulary, so a pretrained network's token embedding grows by those rows
  (``vitrain.models.pretrained_lm``); a subclass whose sequences do not use them (instruction
  tuning) sets ``gpt1_tokens = False``;
* **a cache** (:class:`vitrain.data.cache.NodeCache`): the examples are read, tokenized and
  stored once per node under ``cache_dir/<name>-<fingerprint>/`` (the fingerprint covers the
  source files, the tokenizer, ``max_length`` and the subclass's settings); a second run
  memory-maps the arrays;
* **per-batch padding** (:class:`PadCollate`): each batch is padded to its longest sequence, not
  to ``max_length``;
* **truncation counted**: sequences longer than ``data.max_length`` are cut, and the number cut
  in each split is logged once when the data is set up (and kept in the cache's ``meta.json``);
* **label names** from the data (``classes``: stored in every checkpoint by
  ``CheckpointMetadata``, so predictions come back as names; they flow into
  ``model.net.label_names``, which matches a pretrained head's rows to them by name) and
  ``num_labels`` taken from the data when ``data.num_labels`` is null (it flows into
  ``model.net.num_labels``), checked when given.

Batch contract (what a fine-tuning task receives; every field a tensor):

================  ============  ==============================================================
key               shape         meaning
================  ============  ==============================================================
input_ids         (B, T) int64  token ids, right-padded (BERT: ``[PAD]``; GPT: end-of-text)
attention_mask    (B, T) int64  1: a real token, 0: padding
token_type_ids    (B, T) int64  BERT only (0: first segment with its [CLS]/[SEP], 1: second);
                                absent for GPT
labels            (B,) int64    sequence classification: class index
                  (B,) float32  regression (``num_labels == 1``)
                  (B, T) int64  tagging: a label per token, -100 on ignored sub-words and pads
                  (B, T) int64  instruction tuning: ``input_ids`` on the response and its
                                end-of-text, -100 on prompt and pads (the task shifts them:
                                position t predicts label t + 1)
subset            (B,) int64    only where a split has named parts (MNLI's matched and
                                mismatched test sets): the index into ``subsets``
index             (B,) int64    the example's row in its source (GLUE test files' ``index``)
================  ============  ==============================================================

``T`` is the longest sequence of the batch, at most ``max_length``. A split is stored as
:class:`EncodedSplit`: per-token arrays (concatenated, with offsets) and per-sequence arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from vitrain.data.base import ShardedDataModule
from vitrain.data.cache import NodeCache, fingerprint
from vitrain.data.tokenizer import (
    EOT,
    PACKINGS,
    SPECIAL_TOKENS,
    TOKENIZER_KEY,
    load_tokenizer,
    tokenizer_files,
    train_tokenizer,
)
from vitrain.errors import UserError, require_choice, require_int
from vitrain.hub import looks_like_hub_id, resolve_tokenizer

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
# GPT-1 section 3.3: start, delimiter and extract tokens around (pairs of) texts
GPT1_TOKENS = ("<|start|>", "<|delim|>", "<|extract|>")
CACHE_VERSION = 1
SPLITS = ("train", "val", "test", "predict")
# per-token fields and the value that pads them
TOKEN_PADS = {"input_ids": None, "token_type_ids": 0, "labels": IGNORE_INDEX}


# ------------------------------------------------------------------ the tokenizer
def checkpoint_tokenizer(
    path: str | Path, packing: str | None = None, key: str = "model.net.init_from"
) -> str:
    """The ``tokenizer.json`` text a vitrain language checkpoint carries; with ``packing``, a
    tokenizer without the special tokens that packing needs (a checkpoint of the other family) is
    a :class:`UserError` naming the network the checkpoint holds."""
    from vitrain.checkpoints import checkpoint_network, load_checkpoint

    checkpoint = load_checkpoint(path, key=key)
    text = checkpoint.get(TOKENIZER_KEY) if isinstance(checkpoint, dict) else None
    family = "BERT" if packing == "masked" else "GPT"
    if not text and packing and _holds_other_network(checkpoint):
        raise UserError(
            f"{key}={path} holds {checkpoint_network(checkpoint)}, not a {family} (it has no token embedding): "
            f"a {family} model starts from a {family} pretraining or fine-tuning run (its .ckpt carries the "
            "tokenizer), or from Hugging Face weights (model.net.hf_weights)."
        )
    if not text:
        raise UserError(
            f"{key}={path} holds {checkpoint_network(checkpoint)} and carries no tokenizer (not a checkpoint of a "
            "vitrain language run): give the tokenizer its network was trained with, data.tokenizer=<tokenizer.json>."
        )
    missing = [t for t in SPECIAL_TOKENS.get(packing, ()) if Tokenizer.from_str(text).token_to_id(t) is None]
    if missing:
        raise UserError(
            f"{key}={path} holds {checkpoint_network(checkpoint)}, whose tokenizer lacks {', '.join(missing)}: it "
            f"is not a {family} checkpoint. A {family} model starts from a {family} pretraining or fine-tuning run."
        )
    return text


def _holds_other_network(checkpoint) -> bool:
    """Whether ``checkpoint`` holds weights of a network without a token embedding (a ViT, ...)."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        return False
    return not any(str(k).endswith(("word_embeddings.weight", "wte.weight")) for k in state)


def resolve_tokenizer_source(
    tokenizer: str | None, init_from: str | None, hf_weights: str | None
) -> tuple[str, str | None]:
    """Where the tokenizer comes from: ``("file", path)`` (``data.tokenizer``, or the tokenizer
    files beside ``model.net.hf_weights``), ``("checkpoint", path)`` (the one a vitrain ``.ckpt``
    given as ``model.net.init_from`` carries) or ``("train", None)`` (none given: one is trained
    on the training texts)."""
    if tokenizer:
        return "file", resolve_tokenizer(str(tokenizer))
    if init_from and str(init_from).endswith(".ckpt"):
        return "checkpoint", str(init_from)
    if init_from:
        raise UserError(
            f"model.net.init_from={init_from} is not a vitrain .ckpt, so it carries no tokenizer: give "
            "data.tokenizer=<the tokenizer its network was trained with>."
        )
    if hf_weights:
        path = Path(str(hf_weights)).expanduser()
        if path.is_file() or not (path.is_dir() or looks_like_hub_id(str(hf_weights))):
            raise UserError(
                f"model.net.hf_weights={hf_weights} is a weight file without tokenizer files: give "
                "data.tokenizer=<its tokenizer.json / vocab.txt / folder / hub id>."
            )
        return "file", resolve_tokenizer(str(hf_weights), key="model.net.hf_weights")
    return "train", None


def add_gpt1_tokens(tok: Tokenizer) -> list[str]:
    """Add the :data:`GPT1_TOKENS` that ``tok`` lacks as special tokens (ids after the last one);
    returns the added tokens."""
    missing = [t for t in GPT1_TOKENS if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens(missing)
    return missing


def special_token_ids(tok: Tokenizer, packing: str) -> dict[str, int]:
    """BERT (``masked``): ``cls``, ``sep``, ``pad``, ``mask``, ``unk``; GPT (``causal``): ``start``,
    ``delim``, ``extract``, ``eot`` and ``pad`` (the end-of-text token: GPT has no pad token; pads
    are masked)."""
    if packing == "masked":
        return {
            t.strip("[]").lower(): tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
        }
    ids = {
        name: tok.token_to_id(t) for name, t in zip(("start", "delim", "extract"), GPT1_TOKENS, strict=True)
    }
    ids["eot"] = ids["pad"] = tok.token_to_id(EOT)
    return ids


# ------------------------------------------------------------------ formatting sequences
def truncate_pair(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None, bool]:
    """Cut ``a`` (and ``b``) to ``budget`` tokens together, one token at a time from the longer
    (google-research/bert ``run_classifier.py`` ``_truncate_seq_pair``); returns ``(a, b, cut)``."""
    if len(a) + len(b or []) <= budget:
        return a, b, False
    if b is None:
        return a[:budget], None, True
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b, True


def join_segments(
    a: list[int], b: list[int] | None, packing: str, ids: dict[str, int], max_length: int
) -> tuple[list[int], list[int], bool]:
    """One model input from one or two token lists: ``(input_ids, token_type_ids, truncated)``.

    BERT (``masked``): ``[CLS] a [SEP] (b [SEP])``, token types 0 up to the first ``[SEP]``, 1
    after (Devlin et al. 2018, section 3). GPT (``causal``): ``<start> a (<delim> b) <extract>``
    (Radford et al. 2018, section 3.3), types all 0. The texts are truncated to fit ``max_length``.
    """
    specials = 2 + (b is not None)
    a, b, cut = truncate_pair(a, b, max_length - specials)
    if packing == "masked":
        first = [ids["cls"], *a, ids["sep"]]
        second = [*b, ids["sep"]] if b is not None else []
        return first + second, [0] * len(first) + [1] * len(second), cut
    tokens = [ids["start"], *a, *([ids["delim"], *b] if b is not None else []), ids["extract"]]
    return tokens, [0] * len(tokens), cut


# ------------------------------------------------------------------ stored splits
class EncodedSplit:
    """The encoded sequences of one split.

    ``offsets (N + 1,)``: sequence ``i`` is ``[offsets[i], offsets[i + 1])`` of every per-token
    array in ``tokens`` (``input_ids`` and optionally ``token_type_ids``, ``labels``);
    ``sequences`` holds per-sequence arrays ``(N,)`` (``labels``, ``subset``, ``index``).
    """

    def __init__(
        self, offsets: np.ndarray, tokens: dict[str, np.ndarray], sequences: dict[str, np.ndarray]
    ) -> None:
        self.offsets, self.tokens, self.sequences = offsets, tokens, sequences

    @classmethod
    def from_lists(cls, tokens: dict[str, list[list[int]]], sequences: dict[str, Sequence]) -> EncodedSplit:
        """From per-sequence lists (``tokens["input_ids"][i]`` is sequence ``i``)."""
        lengths = [len(ids) for ids in tokens["input_ids"]]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        flat = {k: np.asarray([t for seq in v for t in seq], dtype=np.int32) for k, v in tokens.items()}
        per_seq = {k: np.asarray(v) for k, v in sequences.items()}
        return cls(offsets, flat, per_seq)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def save(self, folder: Path, split: str) -> None:
        np.save(folder / f"{split}.offsets.npy", self.offsets)
        for kind, arrays in (("tok", self.tokens), ("seq", self.sequences)):
            for name, array in arrays.items():
                np.save(folder / f"{split}.{kind}.{name}.npy", array)

    @classmethod
    def load(cls, folder: Path, split: str) -> EncodedSplit:
        """Memory-mapped arrays of ``split`` in ``folder``."""

        def arrays(kind: str) -> dict[str, np.ndarray]:
            found = sorted(folder.glob(f"{split}.{kind}.*.npy"))
            return {p.name.split(".")[2]: np.load(p, mmap_mode="r") for p in found}

        return cls(np.load(folder / f"{split}.offsets.npy"), arrays("tok"), arrays("seq"))


class EncodedDataset(Dataset):
    """Items of an :class:`EncodedSplit`: ``{field: tensor}`` (per-token fields ``(T,)`` int64,
    per-sequence fields scalars; float labels stay float32)."""

    def __init__(self, split: EncodedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start, end = int(self.split.offsets[index]), int(self.split.offsets[index + 1])
        item = {k: torch.from_numpy(v[start:end].astype(np.int64)) for k, v in self.split.tokens.items()}
        for key, values in self.split.sequences.items():
            value = values[index]
            item[key] = torch.tensor(float(value) if values.dtype.kind == "f" else int(value))
        return item


class PadCollate:
    """Batch items of :class:`EncodedDataset`: per-token fields right-padded to the longest item
    (``pad_to``: to a fixed length instead, for the padding benchmark) with ``pad_id``
    (``input_ids``), 0 (``token_type_ids``) or -100 (``labels``); ``attention_mask`` added;
    per-sequence fields stacked. Picklable (worker processes)."""

    def __init__(self, pad_id: int, pad_to: int | None = None) -> None:
        self.pad_id, self.pad_to = pad_id, pad_to

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        lengths = [len(item["input_ids"]) for item in items]
        length = max(max(lengths), self.pad_to or 0)
        batch: dict[str, torch.Tensor] = {}
        for key, value in items[0].items():
            if value.ndim == 0:
                batch[key] = torch.stack([item[key] for item in items])
                continue
            pad = self.pad_id if key == "input_ids" else TOKEN_PADS.get(key, 0)
            out = torch.full((len(items), length), pad, dtype=value.dtype)
            for row, item in enumerate(items):
                out[row, : len(item[key])] = item[key]
            batch[key] = out
        mask = torch.zeros(len(items), length, dtype=torch.long)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        batch["attention_mask"] = mask
        return batch


# ------------------------------------------------------------------ the DataModule
class FinetuneDataModule(ShardedDataModule):
    """Base class of the fine-tuning DataModules (see the module docstring).

    A subclass sets ``kind`` and ``cache_name`` and implements

    - :meth:`source_settings` -> ``(settings, files)``: what its examples depend on besides the
      tokenizer and ``max_length`` (the cache key);
    - :meth:`read_examples` -> ``{split: examples}`` for ``train``, ``val`` and optionally
      ``test`` / ``predict`` (raising a :class:`UserError` naming the file and line of a bad one);
    - :meth:`training_texts` (texts to train a tokenizer on when none is given);
    - :meth:`label_names` (the label set, from the training examples; ``[]`` for none) and
      :meth:`encode` (examples -> :class:`EncodedSplit` and the number truncated).

    Args:
        packing: ``masked`` (BERT) or ``causal`` (GPT); the config takes it from the model's task.
        tokenizer: ``data.tokenizer`` (see :func:`resolve_tokenizer_source`).
        init_from, hf_weights: the network's starting point (``model.net.init_from`` /
            ``model.net.hf_weights``), whose tokenizer is used when ``tokenizer`` is null.
        max_length: the longest sequence in tokens, special tokens included; longer ones are
            truncated (and counted).
        num_labels: the label count; None: from the data. Checked against the data when given.
        vocab_size, lowercase: a tokenizer trained here (no tokenizer given): its size and
            whether WordPiece lower-cases.
        cache_dir, cache_wait_s: the encoded-example cache (:class:`vitrain.data.cache.NodeCache`).
        batch_size: samples per batch and process.
        **loader_kwargs: ``num_workers``, ``pin_memory``, ``persistent_workers``, ``seed`` (see
            ``vitrain.data.base.DataModule``).
    """

    # network sizes the data decides when the config leaves them null (see run.data_before_task)
    model_size_keys = ("vocab_size", "num_labels", "label_names")
    # GPT (causal): add GPT-1's start / delimiter / extract tokens to the tokenizer
    gpt1_tokens = True
    cache_name = "finetune"

    def __init__(
        self,
        packing: str,
        tokenizer: str | None = None,
        init_from: str | None = None,
        hf_weights: str | None = None,
        max_length: int = 128,
        num_labels: int | None = None,
        vocab_size: int = 8192,
        lowercase: bool = True,
        cache_dir: str = "data/finetune_cache",
        cache_wait_s: float = 3600.0,
        batch_size: int = 32,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        require_choice("data.packing", packing, PACKINGS, "it follows the model")
        require_int("data.max_length", max_length, minimum=4)
        if num_labels is not None:
            require_int("data.num_labels", num_labels, hint="or null: from the data")
        self.packing, self.max_length, self.num_labels = packing, max_length, num_labels
        self.tokenizer_source = resolve_tokenizer_source(tokenizer, init_from, hf_weights)
        self.init_from = init_from
        self.vocab_size_wanted, self.lowercase = vocab_size, lowercase
        self.cache_dir, self.cache_wait_s = Path(cache_dir), cache_wait_s
        self.tokenizer: Tokenizer | None = None
        self.cache_path: Path | None = None
        self.cache_built = False
        self.meta: dict[str, Any] = {}
        self.predict_set: Dataset | None = None

    # -------------------------------------------------------------- subclass hooks
    def source_settings(self) -> tuple[list, list[Path]]:
        raise NotImplementedError

    def read_examples(self) -> dict[str, list]:
        raise NotImplementedError

    def training_texts(self, examples: list) -> Iterable[str]:
        raise NotImplementedError

    def label_names(self, examples: dict[str, list]) -> list[str]:
        return []

    def encode(self, tok: Tokenizer, examples: list, labels: list[str]) -> tuple[EncodedSplit, int]:
        raise NotImplementedError

    # -------------------------------------------------------------- what the model needs
    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary (added GPT-1 tokens included)."""
        self.prepare()
        return self.tokenizer.get_vocab_size()

    @property
    def classes(self) -> list[str]:
        """The label names in label-index order (stored in checkpoints); [] for regression."""
        self.prepare()
        return list(self.meta.get("labels", []))

    @property
    def regression(self) -> bool:
        self.prepare()
        return bool(self.meta.get("regression", False))

    @property
    def special_ids(self) -> dict[str, int]:
        self.prepare()
        return special_token_ids(self.tokenizer, self.packing)

    @property
    def subsets(self) -> list[str]:
        """Names of the parts of the test split (``subset`` in its batches); [] when it has one."""
        self.prepare()
        return list(self.meta.get("subsets", []))

    def model_sizes(self) -> dict[str, Any]:
        """The tokenizer's size, the label count and the label names (a pretrained head's rows are
        matched to them by name)."""
        return {
            "vocab_size": self.vocab_size,
            "num_labels": self.found_num_labels(),
            "label_names": self.classes,
        }

    def found_num_labels(self) -> int:
        """The label count of the data (1: regression), checked against ``data.num_labels``."""
        self.prepare()
        found = 1 if self.meta.get("regression") else len(self.meta.get("labels", []))
        if self.num_labels is not None and self.num_labels != found:
            what = (
                "regression targets (1 output)"
                if found == 1
                else f"{found} labels ({', '.join(self.classes[:8])})"
            )
            raise UserError(
                f"data.num_labels={self.num_labels} but the training data has {what}: set data.num_labels="
                f"{found}, or null to take it from the data."
            )
        return found

    # -------------------------------------------------------------- the cache
    def _tokenizer_settings(self) -> tuple[list, list[Path]]:
        kind, spec = self.tokenizer_source
        if kind == "file":
            return [kind, self.lowercase], tokenizer_files(spec)
        if kind == "checkpoint":
            return [kind, checkpoint_tokenizer(spec, self.packing)], []
        return [kind, self.vocab_size_wanted, self.lowercase], []

    def _key(self) -> str:
        settings, files = self.source_settings()
        tok_settings, tok_files = self._tokenizer_settings()
        key = fingerprint(
            [CACHE_VERSION, self.packing, self.max_length, *tok_settings, *settings], files, tok_files
        )
        return f"{self.cache_name}-{self.packing}-{key}"

    def _load_tokenizer(self, examples: dict[str, list]) -> Tokenizer:
        kind, spec = self.tokenizer_source
        if kind == "file":
            tok = load_tokenizer(spec, self.packing, self.lowercase)
            if self.init_from and str(self.init_from).endswith(".ckpt"):
                self._check_same_tokenizer(tok, spec)
            return tok
        if kind == "checkpoint":
            return Tokenizer.from_str(checkpoint_tokenizer(spec, self.packing))
        texts = self.training_texts(examples["train"])
        return train_tokenizer(texts, self.packing, self.vocab_size_wanted, self.lowercase)

    def _check_same_tokenizer(self, tok: Tokenizer, spec: str) -> None:
        """``data.tokenizer`` must be the tokenizer the ``init_from`` network was trained with (GPT-1's
        tokens aside): same tokens, same ids."""
        theirs = Tokenizer.from_str(checkpoint_tokenizer(self.init_from, self.packing)).get_vocab()
        ours = {t: i for t, i in tok.get_vocab().items() if t not in GPT1_TOKENS}
        theirs = {t: i for t, i in theirs.items() if t not in GPT1_TOKENS}
        if ours != theirs:
            differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda item: item[1])[:3]
            raise UserError(
                f"data.tokenizer={spec} ({len(ours)} tokens) is not the tokenizer model.net.init_from="
                f"{self.init_from} was trained with ({len(theirs)} tokens; e.g. {differ}): its token embedding "
                "would read the wrong rows. Set data.tokenizer=null (the checkpoint's tokenizer)."
            )

    def _build(self, folder: Path) -> dict:
        """Read, tokenize and store every split in ``folder``; returns ``meta.json``'s content."""
        examples = self.read_examples()
        tok = self._load_tokenizer(examples)
        added = add_gpt1_tokens(tok) if self.packing == "causal" and self.gpt1_tokens else []
        if added:
            log.info(
                "Added GPT-1's %s to the tokenizer (ids %d-%d): the network's token embedding gets %d new rows",
                " ".join(added), tok.get_vocab_size() - len(added), tok.get_vocab_size() - 1, len(added),
            )  # fmt: skip
        tok.save(str(folder / "tokenizer.json"))
        labels = self.label_names(examples)
        meta: dict[str, Any] = {"labels": labels, "added_tokens": added, "splits": {}, "truncated": {}}
        meta.update(self.extra_meta(examples))
        for split, items in examples.items():
            if items is None:
                continue
            encoded, truncated = self.encode(tok, items, labels)
            encoded.save(folder, split)
            meta["splits"][split] = len(encoded)
            meta["truncated"][split] = truncated
        return meta

    def extra_meta(self, examples: dict[str, list]) -> dict:
        """More ``meta.json`` entries of a subclass (``regression``, ``subsets``, ...)."""
        return {}

    def prepare(self) -> None:
        """Build (or find) the cache and load the tokenizer; cheap after the first call."""
        if self.tokenizer is not None:
            return
        cache = NodeCache(self.cache_dir, self._key(), self.cache_wait_s)
        self.cache_built = cache.get(self._build)
        self.tokenizer = Tokenizer.from_file(str(cache.path / "tokenizer.json"))
        self.cache_path, self.meta = cache.path, cache.meta()

    # -------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare()
        self.found_num_labels()
        for split, count in self.meta["splits"].items():
            dataset = EncodedDataset(EncodedSplit.load(self.cache_path, split))
            setattr(self, f"{split}_set", dataset)
            cut = self.meta["truncated"].get(split, 0)
            if cut:
                log.warning(
                    "data: %d of %d %s sequences were longer than data.max_length=%d tokens and were truncated.",
                    cut, count, split, self.max_length,
                )  # fmt: skip
        log.info(
            "Fine-tuning data: %s sequences, %s labels, vocabulary %d (%s)",
            " / ".join(f"{n} {s}" for s, n in self.meta["splits"].items()),
            "regression" if self.meta.get("regression") else len(self.meta["labels"]),
            self.tokenizer.get_vocab_size(), self.cache_path,
        )  # fmt: skip

    @property
    def collate_fn(self) -> PadCollate:
        """Padding to the longest sequence of each batch."""
        return PadCollate(self.special_ids["pad"])

    def predict_dataloader(self):
        """The examples to predict (``predict`` split), in their order."""
        self.setup("predict")
        if self.predict_set is None:
            raise UserError(
                f"mode=predict: {type(self).__name__} has no examples to predict (see its predict options)."
            )
        return self._loader(self.predict_set, train=False)
