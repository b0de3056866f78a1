"""Token-classification data (``data=conll``): CoNLL-2003 files or the embedded code-span task.

The files are read by :mod:`vitrain.data.conll`, the embedded task is built by
:mod:`vitrain.data.code_spans`; this module turns sentences into sub-word sequences with a label on
the first sub-word of each word, through :class:`vitrain.data.finetune.FinetuneDataModule`
(tokenizer, cache, per-batch padding), and writes the predicted tags back as a CoNLL file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vitrain.data.conll import (
    OUTSIDE,
    SCHEMES,
    Sentence,
    find_layout,
    from_iob2,
    read_conll,
    tag_names,
    write_conll,
)
from vitrain.data.finetune import IGNORE_INDEX, EncodedSplit, FinetuneDataModule, special_token_ids
from vitrain.errors import UserError, require_choice

log = logging.getLogger(__name__)


class ConllDataModule(FinetuneDataModule):
    """``data=conll``: CoNLL-2003 files (or the embedded code-span task) for token classification.

    Each sentence is one sequence ``[CLS] sub-words [SEP]``; the first sub-word of each word
    carries its tag's index, the other sub-words and the specials -100 (BERT section 5.3; as
    transformers' ``run_ner.py`` with ``label_all_tokens=False``). A sentence longer than
    ``max_length`` sub-words is cut: its last words get no label (training) and are predicted
    ``O`` (``mode=predict``); the words lost are counted per split and logged once. Batches add
    ``lost`` ``(B,)``: the words of each sentence past ``max_length``. A word the tokenizer's
    normaliser empties (a control character) is ``[UNK]``, so every other word keeps its label.

    Args:
        root: a folder of the distribution in one of the layouts of :data:`vitrain.data.conll.LAYOUTS`
            (``eng.train`` / ``eng.testa`` / ``eng.testb``, ``train.txt`` / ``valid.txt`` /
            ``test.txt``); validation is ``testa`` / ``valid``, the test split ``testb`` / ``test``.
        train, val, test: the files one by one (each overrides the one ``root`` finds). With
            neither ``root`` nor ``train``: the embedded task (:mod:`vitrain.data.code_spans`).
        predict: a CoNLL file whose words ``mode=predict`` tags (its tag column may be absent);
            None: the test file.
        token_column, tag_column, columns, scheme, encoding: how the files are read (see
            :func:`read_conll`).
        val_fraction, test_fraction, split_seed: the embedded task's split of the help topics,
            the same as ``data=text``'s defaults, so its held-out topics are the ones a BERT
            pretrained there never saw.
        require_files: fail unless ``root`` or ``train`` is given (recipes for the real data set it).
        **kwargs: see :class:`vitrain.data.finetune.FinetuneDataModule`.
    """

    kind = "token_classification"
    cache_name = "conll"

    def __init__(
        self,
        packing: str,
        root: str | None = None,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        token_column: int = 0,
        tag_column: int = -1,
        columns: int | None = None,
        scheme: str = "iob1",
        encoding: str = "utf-8",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        require_files: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(packing, **kwargs)
        if require_files and root is None and train is None:
            raise UserError(
                "data.root is required here (a recipe for CoNLL-2003): data.root=<folder with eng.train, "
                "eng.testa, eng.testb (or train.txt, valid.txt, test.txt)>. Without it the embedded task is used."
            )
        require_choice("data.scheme", scheme, SCHEMES)
        if root is None and train is None and (val or test or predict):
            raise UserError(
                "data.val / data.test / data.predict need data.root or data.train (null: the embedded task)."
            )
        self.root = root
        self.given = {"train": train, "val": val, "test": test, "predict": predict}
        self.reading = dict(token_column=token_column, tag_column=tag_column, columns=columns, scheme=scheme,
                            encoding=encoding)  # fmt: skip
        self.scheme = scheme
        self.hold_out(val_fraction, test_fraction, split_seed)
        self.sentences: dict[str, list[Sentence]] = {}

    @property
    def embedded(self) -> bool:
        return self.root is None and self.given["train"] is None

    def files(self) -> dict[str, Path]:
        """The file of each split (``root``'s layout, then the explicit ones); {} when embedded."""
        if self.embedded:
            return {}
        found: dict[str, Path] = {}
        if self.root is not None:
            train, val, test = find_layout(self.root)
            found = {"train": train, "val": val, **({"test": test} if test else {})}
        for split, name in self.given.items():
            if name:
                path = Path(name).expanduser()
                if not path.is_file():
                    raise UserError(
                        f"data.{split}={name}: no such file. Give a CoNLL file (token ... tag per line)."
                    )
                found[split] = path
        if "val" not in found:
            raise UserError(
                "data.val is required with data.train: the validation file (CoNLL-2003: eng.testa)."
            )
        return found

    def source_settings(self) -> tuple[list, list[Path]]:
        files = self.files()
        settings = [sorted((k, str(v)) for k, v in files.items()), sorted(self.reading.items())]
        if self.embedded:
            settings += [
                f"embedded help topics {sys.version}",
                self.val_fraction,
                self.test_fraction,
                self.split_seed,
            ]
        return settings, list(files.values())

    def read_examples(self) -> dict[str, list[Sentence]]:
        if self.embedded:
            from vitrain.data.code_spans import code_span_sentences
            from vitrain.data.text import embedded_documents, held_out_split

            held = held_out_split(
                len(embedded_documents()), self.val_fraction, self.test_fraction, self.split_seed
            )
            examples = code_span_sentences(held)
        else:
            examples = {}
            for split, path in self.files().items():
                reading = self.reading if split != "predict" else {**self.reading, "columns": None}
                examples[split] = read_conll(path, key=f"data.{split}", tagged=split != "predict", **reading)
                if not examples[split]:
                    raise UserError(f"data.{split}={path} holds no sentences.")
        if "predict" not in examples and "test" in examples:
            examples["predict"] = examples["test"]
        self.sentences = examples
        return examples

    def training_texts(self, examples: list[Sentence]) -> Iterable[str]:
        return (" ".join(sentence.words) for sentence in examples)

    def label_names(self, examples: dict[str, list[Sentence]]) -> list[str]:
        names = tag_names(examples["train"])
        known = set(names)
        for split in ("val", "test"):
            for sentence in examples.get(split) or []:
                unknown = [tag for tag in sentence.tags if tag not in known]
                if unknown:
                    raise UserError(
                        f"{sentence.where}: the tag {unknown[0]!r} of the {split} split never occurs in the "
                        f"training split (its tags: {', '.join(names)}): fix the tag or add it to training."
                    )
        return names

    def encode(self, tok, examples: list[Sentence], labels: list[str]) -> tuple[EncodedSplit, int]:
        """Sub-word ids of every sentence with the tag index on each word's first sub-word;
        returns the split and how many sentences were cut to ``max_length``."""
        ids = special_token_ids(tok, "masked")
        index = {name: i for i, name in enumerate(labels)}
        budget = self.max_length - 2
        encodings = tok.encode_batch(
            [s.words for s in examples], is_pretokenized=True, add_special_tokens=False
        )
        tokens: dict[str, list] = {"input_ids": [], "token_type_ids": [], "labels": []}
        lost, cut = [], 0
        for sentence, encoding in zip(examples, encodings, strict=True):
            pieces: list[list[int]] = [[] for _ in sentence.words]
            for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
                if word is not None:
                    pieces[word].append(token)
            input_ids, targets = [], []
            for tag, piece in zip(sentence.tags, pieces, strict=True):
                piece = piece or [ids["unk"]]  # a word the normaliser empties (a control character)
                input_ids += piece
                targets += [index.get(tag, 0)] + [IGNORE_INDEX] * (len(piece) - 1)
            cut += len(input_ids) > budget
            input_ids, targets = input_ids[:budget], targets[:budget]
            lost.append(len(sentence.words) - sum(t != IGNORE_INDEX for t in targets))
            tokens["input_ids"].append([ids["cls"], *input_ids, ids["sep"]])
            tokens["token_type_ids"].append([0] * (len(input_ids) + 2))
            tokens["labels"].append([IGNORE_INDEX, *targets, IGNORE_INDEX])
        sequences = {
            "lost": np.asarray(lost, dtype=np.int64),
            "index": np.arange(len(examples), dtype=np.int64),
        }
        return EncodedSplit.from_lists(tokens, sequences), cut

    def setup(self, stage: str | None = None) -> None:
        first = self.train_set is None
        super().setup(stage)
        if not first:
            return
        for split in ("train", "val", "test"):
            dataset = getattr(self, f"{split}_set", None)
            words = int(np.sum(dataset.split.sequences["lost"])) if dataset is not None else 0
            if words:
                log.warning(
                    "data: %d words of the %s split are past data.max_length=%d sub-words (cut sentences): "
                    "they get no label in training and evaluation, and are predicted O.",
                    words, split, self.max_length,
                )  # fmt: skip

    def write_predictions(self, header: list[str], rows: list[list], out_dir: Path) -> list[Path]:
        """Write ``out_dir/predictions.conll``: every line of the predict file (all its columns)
        followed by the predicted tag in the files' scheme (``data.scheme``), a blank line after
        each sentence: with a gold tag column, the input ``conlleval`` reads. Words without a
        sub-word within ``max_length`` are predicted ``O`` (counted in the log)."""
        sentences = self.sentences.get("predict") or self.read_examples()["predict"]
        column = {name: i for i, name in enumerate(header)}
        predicted = {int(row[column["index"]]): row[column["tags"]].split() for row in rows}
        out, lost = [], 0
        for index, sentence in enumerate(sentences):
            tags = predicted.get(index, [])
            lost += len(sentence.words) - len(tags)
            tags = from_iob2(tags + [OUTSIDE] * (len(sentence.words) - len(tags)), self.scheme)
            columns = sentence.columns or [[word] for word in sentence.words]
            out.append([[*row, tag] for row, tag in zip(columns, tags, strict=True)])
        path = Path(out_dir) / "predictions.conll"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_conll(path, out)
        if lost:
            log.warning(
                "mode=predict: %d words past data.max_length=%d sub-words were predicted O.",
                lost,
                self.max_length,
            )
        return [path]
