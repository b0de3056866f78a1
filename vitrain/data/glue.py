"""``data=glue``: the nine GLUE tasks (Wang et al. 2018), from the official distribution's folders or
from Hugging Face ``datasets``.

The official distribution (the ``download_glue_data.py`` layout transformers' ``run_glue.py``
and google-research/bert ``run_classifier.py`` read) has one folder per task under ``data.root``:
``CoLA/``, ``SST-2/``, ``MRPC/``, ``QQP/``, ``STS-B/``, ``MNLI/``, ``QNLI/``, ``RTE/``, ``WNLI/``,
each with ``train.tsv``, ``dev.tsv`` and ``test.tsv`` (MNLI: ``dev_matched.tsv``,
``dev_mismatched.tsv``, ``test_matched.tsv``, ``test_mismatched.tsv``). The files are
tab-separated without quoting, with a header row except CoLA's ``train.tsv`` / ``dev.tsv``; each
task has its own columns (:data:`GLUE_TASKS`, the column positions of transformers'
``data/processors/glue.py``).

GLUE's test labels are hidden (the test files have no label column; Hugging Face's test splits
carry -1): the test files are only predicted (``mode=predict`` writes the submission files,
``SST-2.tsv``, ``MNLI-m.tsv``, ...: ``index\\tprediction`` with GLUE's label names). Checkpoints
and hyperparameters are selected on a slice held out from ``train.tsv`` (``data.selection=train``,
``data.val_fraction``) or on dev (``data.selection=dev``: then the reported test numbers are the
selection numbers), and dev is the reported test split (MNLI: matched and mismatched, as the
test split's two ``subsets``).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from vitrain.data.text_classification import ClassificationData, TextExample, split_off
from vitrain.errors import UserError, require_choice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is laid out and scored."""

    folder: str  # under data.root, and the submission file's name
    text: int  # column of the (first) text in train/dev rows
    pair: int | None  # column of the second text (None: single sentences)
    label: int  # column of the label in train/dev rows
    test_text: int  # column of the text in test rows (the index is column 0)
    labels: tuple[str, ...] | None  # GLUE's label names in label-index order; None: regression
    metrics: tuple[str, ...]  # the GLUE metrics; their mean is the task's score
    header: bool = True  # train/dev files start with a header row
    hf_columns: tuple[str, str | None] = ("sentence", None)  # Hugging Face datasets' text columns
    hf_names: dict[str, str] = field(default_factory=dict)  # Hugging Face label name -> GLUE's
    dev: tuple[tuple[str, str | None], ...] = (("dev.tsv", None),)  # (file, subset)
    test: tuple[tuple[str, str], ...] = ()  # (file, submission name); () : test.tsv -> folder

    @property
    def test_files(self) -> tuple[tuple[str, str], ...]:
        return self.test or (("test.tsv", self.folder),)


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", 3, None, 1, 1, BINARY, ("mcc",), header=False,
                     hf_names={"unacceptable": "0", "acceptable": "1"}),
    "sst2": GlueTask("SST-2", 0, None, 1, 1, BINARY, ("acc",), hf_names={"negative": "0", "positive": "1"}),
    "mrpc": GlueTask("MRPC", 3, 4, 0, 3, BINARY, ("f1", "acc"), hf_columns=("sentence1", "sentence2"),
                     hf_names={"not_equivalent": "0", "equivalent": "1"}),
    "qqp": GlueTask("QQP", 3, 4, 5, 1, BINARY, ("f1", "acc"), hf_columns=("question1", "question2"),
                    hf_names={"not_duplicate": "0", "duplicate": "1"}),
    "stsb": GlueTask("STS-B", 7, 8, -1, 7, None, ("pearson", "spearman"), hf_columns=("sentence1", "sentence2")),
    "mnli": GlueTask("MNLI", 8, 9, -1, 8, ("contradiction", "entailment", "neutral"), ("acc",),
                     hf_columns=("premise", "hypothesis"),
                     dev=(("dev_matched.tsv", "matched"), ("dev_mismatched.tsv", "mismatched")),
                     test=(("test_matched.tsv", "MNLI-m"), ("test_mismatched.tsv", "MNLI-mm"))),
    "qnli": GlueTask("QNLI", 1, 2, -1, 1, NLI2, ("acc",), hf_columns=("question", "sentence")),
    "rte": GlueTask("RTE", 1, 2, -1, 1, NLI2, ("acc",), hf_columns=("sentence1", "sentence2")),
    "wnli": GlueTask("WNLI", 1, 2, -1, 1, BINARY, ("acc",), hf_columns=("sentence1", "sentence2"),
                     hf_names={"not_entailment": "0", "entailment": "1"}),
}  # fmt: skip
SELECTIONS = ("train", "dev")
# Hugging Face glue split names of each file role
HF_SPLITS = {"dev.tsv": "validation", "dev_matched.tsv": "validation_matched",
             "dev_mismatched.tsv": "validation_mismatched", "test.tsv": "test",
             "test_matched.tsv": "test_matched", "test_mismatched.tsv": "test_mismatched"}  # fmt: skip


class GlueDataModule(ClassificationData):
    """``data=glue data.task=<name> data.root=<GLUE folder>`` (or ``data.hf_dataset=nyu-mll/glue``).

    Args:
        task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte or wnli.
        root: the folder holding the tasks' folders (``<root>/SST-2/train.tsv``), or the task's
            own folder.
        hf_dataset: instead of ``root``: a Hugging Face dataset id (``nyu-mll/glue``; read from
            the ``datasets`` cache, fetched when online) or a ``save_to_disk`` folder.
        hf_config: the dataset's configuration (null: the task name).
        selection: ``train`` (select on ``val_fraction`` of train.tsv, held out with
            ``split_seed``) or ``dev`` (select on dev; MNLI: dev_matched).
        **kwargs: see :class:`vitrain.data.finetune.FinetuneDataModule`.
    """

    def __init__(
        self,
        packing: str,
        task: str = "sst2",
        root: str | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        selection: str = "train",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        require_choice("data.task", task, GLUE_TASKS)
        if selection not in SELECTIONS:
            raise UserError(f"data.selection={selection!r}: choose train (a held-out slice of train) or dev.")
        if (root is None) == (hf_dataset is None):
            raise UserError(
                "data=glue needs exactly one of data.root=<the GLUE folder (with SST-2/train.tsv, ...)> and "
                "data.hf_dataset=<nyu-mll/glue or a save_to_disk folder>."
            )
        self.task_name, self.spec = task, GLUE_TASKS[task]
        super().__init__(packing, regression=self.spec.labels is None, **kwargs)
        self.fixed_labels = list(self.spec.labels) if self.spec.labels else None
        self.root = Path(root).expanduser() if root else None
        self.hf_dataset, self.hf_config = hf_dataset, hf_config or task
        self.selection, self.val_fraction, self.split_seed = selection, val_fraction, split_seed

    @property
    def metrics(self) -> tuple[str, ...]:
        """The task's GLUE metrics (their mean is ``val/score``)."""
        return self.spec.metrics

    # -------------------------------------------------------------- the files
    def task_dir(self) -> Path:
        """``root/<folder>`` (or ``root`` when it is the task's folder itself)."""
        for folder in (self.root / self.spec.folder, self.root):
            if (folder / "train.tsv").is_file():
                return folder
        raise UserError(
            f"data.root={self.root}: no {self.spec.folder}/train.tsv there. Point data.root at the GLUE folder "
            f"(holding {self.spec.folder}/train.tsv, dev.tsv, test.tsv) for data.task={self.task_name}."
        )

    def _file_names(self) -> list[str]:
        return ["train.tsv", *(f for f, _ in self.spec.dev), *(f for f, _ in self.spec.test_files)]

    def source_settings(self) -> tuple[list, list[Path]]:
        settings = [self.task_name, self.selection, self.val_fraction, self.split_seed]
        if self.root is None:
            hf = Path(self.hf_dataset).expanduser()
            files = sorted(p for p in hf.rglob("*") if p.is_file()) if hf.is_dir() else []
            return [*settings, self.hf_dataset, self.hf_config], files
        folder = self.task_dir()
        return settings, [folder / name for name in self._file_names() if (folder / name).is_file()]

    def read_examples(self) -> dict[str, list[TextExample] | None]:
        read = self._read_hf if self.root is None else self._read_tsv
        train = read("train.tsv", None, test=False)
        dev = [e for name, subset in self.spec.dev for e in read(name, subset, test=False)]
        predict = [e for name, stem in self.spec.test_files for e in read(name, stem, test=True)]
        if self.selection == "train":
            train, val = split_off(train, self.val_fraction, self.split_seed, "data.val_fraction")
        else:
            first = self.spec.dev[0][1]
            val = [e for e in dev if e.subset == first]
        return {"train": train, "val": val, "test": dev, "predict": predict or None}

    def _read_tsv(self, name: str, subset: str | None, test: bool) -> list[TextExample]:
        """The examples of one GLUE file (``test``: no labels; the index is column 0)."""
        path = self.task_dir() / name
        if not path.is_file():
            if test:
                log.info("data=glue: no %s (mode=predict needs it)", path)
                return []
            raise UserError(
                f"data.root={self.root}: {path} is missing; GLUE {self.spec.folder} has {', '.join(self._file_names())}."
            )
        spec = self.spec
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        header = spec.header or test
        names = rows[0] if header and rows else []
        needed = self._columns_needed(test)
        out, skipped = [], 0
        for number, row in enumerate(rows[1:] if header else rows, 2 if header else 1):
            if len(row) < needed:
                if (
                    self.task_name == "qqp"
                ):  # QQP has malformed lines (transformers' processor skips them too)
                    skipped += 1
                    continue
                self._bad_row(path, number, row, names, needed)
            where = f"{path}:{number}"
            if test:
                text, pair = row[spec.test_text], row[spec.test_text + 1] if spec.pair is not None else None
                out.append(TextExample(text, pair, None, where, subset, _index(row[0], where)))
            else:
                pair = row[spec.pair] if spec.pair is not None else None
                out.append(TextExample(row[spec.text], pair, row[spec.label], where, subset, len(out)))
        if skipped:
            log.warning("data=glue: skipped %d malformed lines of %s", skipped, path)
        if not out and not test:
            raise UserError(f"{path} holds no examples.")
        return out

    def _columns_needed(self, test: bool) -> int:
        """How many columns a row of a train/dev (``test``: test) file has at least."""
        spec = self.spec
        if test:
            return spec.test_text + (2 if spec.pair is not None else 1)
        last = max(spec.text, spec.pair if spec.pair is not None else 0) + 1
        return max(last + (spec.label < 0), spec.label + 1)

    def _bad_row(self, path: Path, number: int, row: list[str], names: list[str], needed: int) -> None:
        kind = "a sentence-pair task" if self.spec.pair is not None else "a single-sentence task"
        found = f" (its header: {', '.join(names)})" if names else ""
        raise UserError(
            f"{path}:{number} has {len(row)} tab-separated columns{found}, but data.task={self.task_name} "
            f"({self.spec.folder}, {kind}) needs at least {needed}: is it another task's file, or a file "
            "changed by a spreadsheet? Use the files of the GLUE distribution."
        )

    def _read_hf(self, name: str, subset: str | None, test: bool) -> list[TextExample]:
        """The examples of the Hugging Face split playing the role of GLUE file ``name``."""
        split = "train" if name == "train.tsv" else HF_SPLITS[name]
        dataset = self._hf_splits()
        if split not in dataset:
            if test:
                return []
            raise UserError(
                f"data.hf_dataset={self.hf_dataset}: no split {split!r} (it has {', '.join(dataset)})."
            )
        rows = dataset[split]
        text_col, pair_col = self.spec.hf_columns
        for column in (text_col, pair_col, "label"):
            if column is not None and column not in rows.column_names:
                kind = "a sentence-pair task" if pair_col else "a single-sentence task"
                raise UserError(
                    f"data.hf_dataset={self.hf_dataset} [{split}] has no {column!r} column (columns found: "
                    f"{', '.join(rows.column_names)}); data.task={self.task_name} is {kind} with columns "
                    f"{text_col}{', ' + pair_col if pair_col else ''}, label: check data.hf_config."
                )
        names = getattr(rows.features["label"], "names", None)
        out = []
        for i, record in enumerate(rows):
            where = f"data.hf_dataset={self.hf_dataset} [{split}] row {i}"
            label = record["label"]
            if test or label is None or (names is not None and label < 0):
                label = None  # hidden (GLUE test splits carry -1)
            elif names is not None:  # map by name, never by position: label orders differ between sources
                label = self.spec.hf_names.get(names[label], names[label])
            pair = record[pair_col] if pair_col else None
            out.append(TextExample(record[text_col], pair, label, where, subset, int(record.get("idx", i))))
        return out

    def _hf_splits(self):
        """The Hugging Face ``DatasetDict`` (loaded once)."""
        if getattr(self, "_hf", None) is None:
            import datasets

            path = Path(self.hf_dataset).expanduser()
            try:
                if path.is_dir():
                    self._hf = datasets.load_from_disk(str(path))
                else:
                    self._hf = datasets.load_dataset(self.hf_dataset, self.hf_config)
            except (FileNotFoundError, ValueError, ConnectionError) as err:
                raise UserError(
                    f"data.hf_dataset={self.hf_dataset} (data.hf_config={self.hf_config}) cannot be loaded: "
                    f"{err}. Give a save_to_disk folder, or a dataset id that is cached or reachable."
                ) from err
            if not hasattr(self._hf, "keys"):
                raise UserError(f"data.hf_dataset={self.hf_dataset} is a single split: save the DatasetDict.")
        return self._hf


def _index(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError as err:
        raise UserError(f"{where}: the index column holds {value!r}, not a number.") from err
