"""Sequence classification / regression data: one text or a text pair and a label per example.

* :class:`TextClassificationDataModule` (``data=text_classification``): a CSV / TSV / JSONL /
  Parquet file per split with configurable columns (``text``, optional ``text_pair``, ``label``),
  or, with no files, the embedded task (:func:`help_topic_passages`: which CPython help topic a
  passage comes from; no download).
* :class:`GlueDataModule` (``data=glue``, in ``vitrain.data.glue``): the GLUE tasks from the
  official distribution's folders or from Hugging Face ``datasets``.

Both encode through :class:`vitrain.data.finetune.FinetuneDataModule` (tokenizer, cache,
per-batch padding, truncation counts); this module adds the label set (names from the training
split; float labels mean regression), the checks on labels (a validation or test label that
training never had is an error naming the file and line) and the prediction files.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from vitrain.data.finetune import EncodedSplit, FinetuneDataModule, join_segments, special_token_ids
from vitrain.errors import FRACTION, UserError, require_in

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")


@dataclass
class TextExample:
    """One example: ``text`` (and ``pair``), its ``label`` (a name, a float for regression, or
    None when hidden), ``where`` it was read (``file:line``, for messages), the ``subset`` of its
    split it belongs to (MNLI's matched / mismatched) and its ``index`` in the source."""

    text: str
    pair: str | None
    label: str | float | None
    where: str
    subset: str | None = None
    index: int = 0


# ------------------------------------------------------------------ reading tables
def read_table(path: Path, key: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The columns and ``(line, record)`` rows of a ``.csv`` / ``.tsv`` (header row) / ``.jsonl`` /
    ``.parquet`` file (``line``: 1-based line in the file; Parquet: the row number + 1)."""
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file. Give a {' / '.join(TABLE_SUFFIXES)} file.")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UserError(f"{key}={path}: not a {' / '.join(TABLE_SUFFIXES)} file.")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return list(table.column_names), [(i + 1, row) for i, row in enumerate(table.to_pylist())]
    if suffix == ".jsonl":
        rows, columns = [], {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{key}: {path}:{number} is not JSON ({err.msg}).") from err
            if not isinstance(record, dict):
                raise UserError(f"{key}: {path}:{number} is not a JSON object.")
            columns.update(dict.fromkeys(record))
            rows.append((number, record))
        return list(columns), rows
    delimiter = "\t" if suffix == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, [])
        rows = [(reader.line_num, dict(zip(header, row, strict=False))) for row in reader if row]
    return header, rows


def column_value(record: dict, column: str, path: Path, line: int, columns: list[str], key: str) -> object:
    """``record[column]``; a missing column names the columns the file has."""
    if column not in record or record[column] is None:
        raise UserError(
            f"{path}:{line} has no {column!r} column ({key}={column}); the columns found are "
            f"{', '.join(columns)}: set {key} to one of them."
        )
    return record[column]


# ------------------------------------------------------------------ the embedded task
MIN_WORDS = 12  # a passage is a paragraph of at least this many words


def help_topic_passages(classes: int = 8) -> list[TextExample]:
    """The embedded task: which CPython help topic (``pydoc_data.topics``) a passage comes from.

    Every topic's text is split into paragraphs (blank-line separated, whitespace normalised);
    paragraphs of at least ``MIN_WORDS`` words are passages. A passage found in more than one
    topic (the help texts share sections) is dropped, so every label is true of its text. The
    ``classes`` topics with the most passages are the classes (ties by name); ``index`` is the
    passage's position within its topic.
    """
    from pydoc_data.topics import topics

    found: dict[str, list[str]] = {}
    owners: Counter[str] = Counter()
    for name in sorted(topics):
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", topics[name])]
        unique = list(dict.fromkeys(p for p in paragraphs if len(p.split()) >= MIN_WORDS))
        found[name] = unique
        owners.update(unique)
    kept = {name: [p for p in passages if owners[p] == 1] for name, passages in found.items()}
    chosen = sorted(kept, key=lambda name: (-len(kept[name]), name))[:classes]
    return [
        TextExample(text, None, name, f"pydoc_data.topics[{name!r}] paragraph {i}", index=i)
        for name in sorted(chosen)
        for i, text in enumerate(kept[name])
    ]


def split_off(examples: list[TextExample], fraction: float, seed: int, key: str) -> tuple[list, list]:
    """``(rest, held)``: a ``seed`` permutation holds out ``fraction`` of ``examples`` (at least
    one, leaving at least one)."""
    require_in(key, fraction, FRACTION)
    if len(examples) < 2:
        raise UserError(
            f"{key}: {len(examples)} example(s) cannot be split; give more data or a file for it."
        )
    order = np.random.default_rng(seed).permutation(len(examples)).tolist()
    n = min(max(1, round(fraction * len(examples))), len(examples) - 1)
    held = set(order[:n])
    return [e for i, e in enumerate(examples) if i not in held], [
        e for i, e in enumerate(examples) if i in held
    ]


# ------------------------------------------------------------------ the shared DataModule
class ClassificationData(FinetuneDataModule):
    """What ``data=text_classification`` and ``data=glue`` share: the label set, the encoding
    of (pairs of) texts, the checks on labels and the prediction files.

    A subclass implements ``source_settings`` and ``read_examples`` (``{split: [TextExample]}``)
    and may set ``fixed_labels`` (a label order, e.g. GLUE's) and ``is_regression``.
    """

    kind = "text_classification"
    cache_name = "cls"
    fixed_labels: list[str] | None = None

    def __init__(self, *args, regression: bool | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.regression_wanted = regression

    def training_texts(self, examples: list[TextExample]) -> Iterable[str]:
        for example in examples:
            yield example.text
            if example.pair:
                yield example.pair

    def is_regression(self, examples: dict[str, list[TextExample]]) -> bool:
        """Regression when asked (``data.regression``), when ``data.num_labels`` is 1, or when a
        training label is a number that is not an integer (``3.8``)."""
        if self.regression_wanted is not None:
            return bool(self.regression_wanted)
        if self.num_labels == 1:
            return True
        return any(not _is_integer(e.label) and _is_number(e.label) for e in examples["train"])

    def extra_meta(self, examples: dict[str, list[TextExample]]) -> dict:
        subsets = sorted({e.subset for e in examples.get("test") or [] if e.subset})
        files = sorted({e.subset for e in examples.get("predict") or [] if e.subset})
        return {"regression": self.is_regression(examples), "subsets": subsets, "predict_files": files}

    def label_names(self, examples: dict[str, list[TextExample]]) -> list[str]:
        if self.is_regression(examples):
            return []
        if self.fixed_labels is not None:
            return list(self.fixed_labels)
        found = {str(e.label) for e in examples["train"] if e.label is not None}
        if not found:
            raise UserError(f"data: the training split ({examples['train'][0].where}) has no labels.")
        return sorted(found, key=lambda name: (0, float(name), name) if _is_number(name) else (1, 0.0, name))

    def encode(
        self, tok: Tokenizer, examples: list[TextExample], labels: list[str]
    ) -> tuple[EncodedSplit, int]:
        """Token ids (and BERT token types) of every example, its label index (or float target),
        its subset and index; returns the split and how many examples were truncated."""
        ids = special_token_ids(tok, self.packing)
        pairs = [e.pair is not None for e in examples]
        firsts = tok.encode_batch([e.text for e in examples], add_special_tokens=False)
        seconds = iter(
            tok.encode_batch([e.pair for e in examples if e.pair is not None], add_special_tokens=False)
        )
        index = {name: i for i, name in enumerate(labels)}
        regression = not labels
        subsets = {name: i for i, name in enumerate(sorted({e.subset for e in examples if e.subset}))}
        tokens: dict[str, list] = {"input_ids": []}
        if self.packing == "masked":
            tokens["token_type_ids"] = []
        targets, cut = [], 0
        for example, first, has_pair in zip(examples, firsts, pairs, strict=True):
            second = next(seconds).ids if has_pair else None
            input_ids, types, truncated = join_segments(first.ids, second, self.packing, ids, self.max_length)
            cut += truncated
            tokens["input_ids"].append(input_ids)
            if "token_type_ids" in tokens:
                tokens["token_type_ids"].append(types)
            targets.append(self._target(example, index, regression, labels))
        sequences = {
            "labels": np.asarray(targets, dtype=np.float32 if regression else np.int64),
            "index": np.asarray([e.index for e in examples], dtype=np.int64),
        }
        if len(subsets) > 1:
            sequences["subset"] = np.asarray([subsets[e.subset] for e in examples], dtype=np.int64)
        return EncodedSplit.from_lists(tokens, sequences), cut

    def _target(
        self, example: TextExample, index: dict[str, int], regression: bool, labels: list[str]
    ) -> float:
        """The label index (or float target) of ``example``; -1 for a hidden label."""
        if example.label is None:
            return -1
        if regression:
            if not _is_number(example.label):
                raise UserError(f"{example.where}: the regression target {example.label!r} is not a number.")
            return float(example.label)
        name = str(example.label)
        if name not in index:
            raise UserError(
                f"{example.where}: label {name!r} never occurs in the training split (its labels: "
                f"{', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}): fix the label or add it to training."
            )
        return index[name]

    # -------------------------------------------------------------- predictions
    def write_predictions(self, header: list[str], rows: list[list], out_dir: Path) -> list[Path]:
        """Write the task's prediction ``rows`` (``header``: ``index``, ``subset``, ``prediction``) as
        ``index\tprediction`` files: one per predicted file (GLUE's submission names, ``SST-2.tsv``,
        ``MNLI-m.tsv``, ...), else ``out_dir/predictions.tsv``."""
        column = {name: i for i, name in enumerate(header)}
        stems = self.meta.get("predict_files") or ["predictions"]
        paths = []
        for number, stem in enumerate(stems):
            chosen = [
                (r[column["index"]], r[column["prediction"]]) for r in rows if r[column["subset"]] == number
            ]
            path = out_dir / f"{stem}.tsv"
            _write_tsv(path, chosen)
            paths.append(path)
        return paths


def _write_tsv(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "prediction"])
        writer.writerows(rows)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _is_integer(value) -> bool:
    return _is_number(value) and float(value).is_integer()


# ------------------------------------------------------------------ data=text_classification
class TextClassificationDataModule(ClassificationData):
    """``data=text_classification``: a table per split, or the embedded help-topic task.

    Args:
        train, val, test: ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.parquet`` files. ``train: null``
            is the embedded task (:func:`help_topic_passages`). Without ``val`` (or ``test``) a
            ``val_fraction`` (``test_fraction``) of the examples of ``train`` is held out with
            ``split_seed`` (``test_fraction: 0``: no test split).
        predict: a file of the same layout whose examples ``mode=predict`` labels (its label
            column may be absent).
        text_column, text_pair_column, label_column: the columns (``text_pair_column: null``:
            single texts).
        val_fraction, test_fraction: shares of the training examples held out for validation
            and testing when ``val`` (``test``) is not given (``test_fraction`` 0: no test split).
        split_seed: seed of the draw of the held-out examples.
        regression: null decides from the labels (a non-integer number, or ``num_labels: 1``).
        classes: the embedded task's number of topics.
        **kwargs: see :class:`vitrain.data.finetune.FinetuneDataModule`.
    """

    def __init__(
        self,
        packing: str,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        classes: int = 8,
        regression: bool | None = None,
        **kwargs,
    ) -> None:
        super().__init__(packing, regression=regression, **kwargs)
        if train is None and (val or test or predict):
            raise UserError("data.val / data.test / data.predict need data.train (null: the embedded task).")
        self.files = {"train": train, "val": val, "test": test, "predict": predict}
        self.columns = (text_column, text_pair_column, label_column)
        self.hold_out(val_fraction, test_fraction, split_seed)
        self.classes_wanted = classes

    def source_settings(self) -> tuple[list, list[Path]]:
        given = {split: Path(f).expanduser() for split, f in self.files.items() if f}
        for split, path in given.items():
            if not path.is_file():
                raise UserError(
                    f"data.{split}={path}: no such file. Give a {' / '.join(TABLE_SUFFIXES)} file."
                )
        settings = [sorted(self.files.items(), key=str), self.columns, self.val_fraction, self.test_fraction,
                    self.split_seed, self.regression_wanted, self.num_labels == 1]  # fmt: skip
        if not given:
            settings += [f"embedded help topics {sys.version}", self.classes_wanted]
        return settings, list(given.values())

    def read_examples(self) -> dict[str, list[TextExample] | None]:
        if self.files["train"] is None:
            examples = {"train": help_topic_passages(self.classes_wanted)}
        else:
            examples = {s: self._read(s, Path(f).expanduser()) for s, f in self.files.items() if f}
        train, test_fraction = examples["train"], self.test_fraction
        if "val" not in examples:
            train, examples["val"] = split_off(train, self.val_fraction, self.split_seed, "data.val_fraction")
            test_fraction = self.test_fraction / (1 - self.val_fraction)  # both fractions of the whole
        if "test" not in examples and self.test_fraction > 0:
            train, examples["test"] = split_off(
                train, test_fraction, self.split_seed + 1, "data.test_fraction"
            )
        examples["train"] = train
        return examples

    def _read(self, split: str, path: Path) -> list[TextExample]:
        key = f"data.{split}"
        columns, rows = read_table(path, key)
        text_col, pair_col, label_col = self.columns
        out = []
        for line, record in rows:
            text = column_value(record, text_col, path, line, columns, "data.text_column")
            pair = None
            if pair_col is not None:
                if pair_col not in columns:
                    raise UserError(
                        f"{path} has single texts but data.text_pair_column={pair_col} asks for text pairs "
                        f"(columns found: {', '.join(columns)}): set data.text_pair_column to one of them, or "
                        "null for single texts."
                    )
                pair = str(column_value(record, pair_col, path, line, columns, "data.text_pair_column"))
            if split == "predict" and label_col not in record:
                label = None
            else:
                label = column_value(record, label_col, path, line, columns, "data.label_column")
            out.append(TextExample(str(text), pair, label, f"{path}:{line}", index=len(out)))
        if not out:
            raise UserError(f"{key}={path} holds no examples.")
        return out
