"""data=glue: every task's files as the GLUE distribution lays them out, selection slices, MNLI's two
dev sets, hidden test labels, wrong files, and the same tasks from a Hugging Face save_to_disk folder."""

from __future__ import annotations

import pytest

from tests.helpers import GLUE_LABELS, write_glue_task
from vitrain.data.glue import GLUE_TASKS, GlueDataModule
from vitrain.errors import UserError


def glue(tmp_path, task, **kwargs):
    args = dict(vocab_size=150, max_length=32, batch_size=4, cache_dir=str(tmp_path / "cache"))
    return GlueDataModule(kwargs.pop("packing", "masked"), task=task, **{**args, **kwargs})


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_every_glue_task_reads_its_distribution_layout(tmp_path, task):
    spec = GLUE_TASKS[task]
    write_glue_task(tmp_path / "glue", spec.folder)
    dm = glue(tmp_path, task, root=str(tmp_path / "glue"))
    dm.setup()
    assert dm.classes == (GLUE_LABELS[spec.folder] or []) and dm.regression == (task == "stsb")
    mnli = task == "mnli"
    # selection: 10% of train.tsv (24 rows); test: dev (MNLI: matched + mismatched); predict: test.tsv
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (22, 2, 16 if mnli else 8)
    assert len(dm.predict_set) == (12 if mnli else 6) and dm.meta["predict_files"] == (
        ["MNLI-m", "MNLI-mm"] if mnli else [spec.folder]
    )
    assert dm.subsets == (["matched", "mismatched"] if mnli else [])
    item = dm.train_set[0]
    assert (1 in item["token_type_ids"].tolist()) == (spec.pair is not None)  # a second segment
    assert int(dm.predict_set[0]["labels"]) == -1  # hidden: never scored
    if not dm.regression:  # the label is the text's first word, w<k>: read from the right column
        first = dm.tokenizer.decode(item["input_ids"][1:].tolist()).split()[0]
        assert first == f"w{int(item['labels'])}"


def test_selection_on_dev_and_mnli_subsets(tmp_path):
    write_glue_task(tmp_path / "glue", "MNLI")
    dm = glue(
        tmp_path,
        "mnli",
        root=str(tmp_path / "glue" / "MNLI"),
        selection="dev",
        packing="causal",
        vocab_size=300,
    )
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 8, 16)
    subsets = [int(dm.test_set[i]["subset"]) for i in range(16)]
    assert subsets == [0] * 8 + [1] * 8 and "subset" not in dm.val_set[0]
    assert dm.train_set[0]["input_ids"][0] == dm.special_ids["start"]


def test_wrong_glue_files_are_one_message(tmp_path):
    write_glue_task(tmp_path / "glue", "SST-2")
    (tmp_path / "glue" / "MRPC").symlink_to(tmp_path / "glue" / "SST-2")
    with pytest.raises(UserError, match=r"MRPC/train.tsv:2 has 2 tab-separated columns \(its header: sentence, label\), "
                       r"but data.task=mrpc \(MRPC, a sentence-pair task\) needs at least 5"):  # fmt: skip
        glue(tmp_path, "mrpc", root=str(tmp_path / "glue")).setup()
    with pytest.raises(UserError, match=r"no RTE/train.tsv there"):
        glue(tmp_path, "rte", root=str(tmp_path / "glue")).setup()
    with pytest.raises(UserError, match="data.task='sst-2': choose one of cola, sst2"):
        glue(tmp_path, "sst-2", root=str(tmp_path / "glue"))
    with pytest.raises(UserError, match="needs exactly one of data.root"):
        glue(tmp_path, "sst2")


def test_hugging_face_glue_labels_are_mapped_by_name(tmp_path):
    import datasets

    names = ["entailment", "neutral", "contradiction"]  # Hugging Face's order, not GLUE's
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names), "idx": datasets.Value("int32")})  # fmt: skip

    def split(n, hidden=False):
        rows = {"premise": [f"w{i % 3} a cat sits" for i in range(n)], "hypothesis": ["a dog runs"] * n,
                "label": [-1 if hidden else i % 3 for i in range(n)], "idx": list(range(n))}  # fmt: skip
        return datasets.Dataset.from_dict(rows, features=features)

    splits = {"train": split(20), "validation_matched": split(6), "validation_mismatched": split(6),
              "test_matched": split(4, True), "test_mismatched": split(4, True)}  # fmt: skip
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "mnli"))
    dm = glue(tmp_path, "mnli", hf_dataset=str(tmp_path / "mnli"), val_fraction=0.25)
    dm.setup()
    assert dm.classes == ["contradiction", "entailment", "neutral"]
    for i in range(6):  # dev rows in order: Hugging Face label i % 3 -> the same name in GLUE's order
        assert dm.classes[int(dm.test_set[i]["labels"])] == names[i % 3]
    assert len(dm.test_set) == 12 and len(dm.predict_set) == 8 and int(dm.predict_set[0]["labels"]) == -1
    assert (len(dm.train_set), len(dm.val_set)) == (15, 5)
    with pytest.raises(
        UserError, match=r"has no 'sentence' column \(columns found: premise, hypothesis, label, idx\)"
    ):
        glue(tmp_path, "sst2", hf_dataset=str(tmp_path / "mnli")).setup()
