"""data=conll: CoNLL-2003 files as distributed, IOB1 / IOB2, entities as conlleval reads them,
the embedded code-span task, sub-word labels and truncation counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vitrain.data.code_spans import code_span_sentences, is_prose, span_type, tag_paragraph
from vitrain.data.conll import (
    LAYOUTS,
    entities,
    find_layout,
    from_iob2,
    read_conll,
    tag_names,
    to_iob2,
)
from vitrain.errors import UserError

# The first lines of CoNLL-2003's eng.train as distributed (token POS chunk NER, IOB1 tags: an
# entity starts with I- unless it follows one of the same type), with one B- tag as in the files.
ENG_TRAIN = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
to TO I-VP O
boycott VB I-VP O
British JJ I-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

In IN I-PP O
Spain NNP I-NP I-LOC
Italy NNP I-NP B-LOC
. . O O

"""
# The same sentences in the train.txt / valid.txt / test.txt copy (IOB2 tags, -X- in the chunk column)
TXT_TRAIN = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

"""


def write_distribution(root: Path, layout: str, text: str = ENG_TRAIN) -> Path:
    """``root`` holding the three files of ``layout`` (the same sentences in each)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in LAYOUTS[layout]:
        (root / name).write_text(text)
    return root


def test_eng_files_read_as_distributed(tmp_path):
    root = write_distribution(tmp_path / "conll2003", "eng")
    train, val, test = find_layout(root)
    assert (train.name, val.name, test.name) == ("eng.train", "eng.testa", "eng.testb")
    sentences = read_conll(train)
    assert [s.words for s in sentences] == [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["Peter", "Blackburn"],
        ["In", "Spain", "Italy", "."],
    ]
    # IOB1 -> IOB2: every entity starts with B-; "Spain Italy" stays two LOC entities
    assert sentences[0].tags[:3] == ["B-ORG", "O", "B-MISC"]
    assert sentences[1].tags == ["B-PER", "I-PER"]
    assert sentences[2].tags == ["O", "B-LOC", "B-LOC", "O"]
    assert sentences[0].where == f"{train}:3" and sentences[2].document == 2
    assert tag_names(sentences) == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]


def test_txt_layout_in_iob2_and_the_tag_column(tmp_path):
    root = write_distribution(tmp_path / "conll", "txt", TXT_TRAIN)
    assert [p.name for p in find_layout(root)] == ["train.txt", "valid.txt", "test.txt"]
    sentences = read_conll(root / "train.txt", scheme="iob2")
    assert sentences[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    chunks = read_conll(root / "train.txt", tag_column=2, scheme="iob2")  # the chunk column
    assert chunks[0].tags[:4] == ["B-NP", "B-VP", "B-NP", "I-NP"]
    # an IOB1 file read as IOB2 is refused with the fix
    (tmp_path / "iob1.txt").write_text(ENG_TRAIN)
    with pytest.raises(UserError, match=r"iob1.txt:3: .*starts an entity with 'I-ORG'.*data.scheme=iob1"):
        read_conll(tmp_path / "iob1.txt", scheme="iob2")


def test_a_line_with_the_wrong_number_of_columns_names_file_and_line(tmp_path):
    bad = tmp_path / "eng.train"
    lines = ENG_TRAIN.splitlines()
    lines[5] = "German JJ I-MISC"  # the chunk column is missing
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"{bad}:6 has 3 column\(s\) where the file's lines have 4"):
        read_conll(bad)
    with pytest.raises(UserError, match=r"data.tag_column=5, but .*eng.train:3 has 4 column"):
        read_conll(tmp_path / "eng.train", tag_column=5)
    (tmp_path / "iobes.txt").write_text("Peter NNP I-NP S-PER\n")
    with pytest.raises(UserError, match=r"iobes.txt:1: the tag 'S-PER' is not an IOB tag"):
        read_conll(tmp_path / "iobes.txt")


def test_a_folder_without_the_distribution_files(tmp_path):
    (tmp_path / "eng.train").write_text(ENG_TRAIN)
    with pytest.raises(UserError, match="eng.train is there but not eng.testa"):
        find_layout(tmp_path)
    (tmp_path / "eng.train").unlink()
    (tmp_path / "notes.md").write_text("")
    with pytest.raises(
        UserError, match=r"no CoNLL-2003 files \(expected eng.train \+ eng.testa.*found notes.md"
    ):
        find_layout(tmp_path)


def test_iob_conversions_keep_the_entities_conlleval_reads():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-MISC", "O", "I-MISC"]
    iob2 = to_iob2(iob1)
    assert iob2 == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-MISC", "O", "B-MISC"]
    assert entities(iob1) == entities(iob2) == [
        ("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("ORG", 5, 5), ("MISC", 6, 6), ("MISC", 8, 8),
    ]  # fmt: skip
    assert from_iob2(iob2, "iob1") == iob1 and from_iob2(iob2, "iob2") == iob2
    # a malformed prediction (I- after O) is read as conlleval reads it, then written validly
    assert from_iob2(["O", "I-PER", "I-LOC"], "iob2") == ["O", "B-PER", "B-LOC"]


def test_embedded_code_span_tags_are_true_of_the_text():
    words, tags = tag_paragraph('The simple form, "assert expression", is equivalent to "x.y()" or "if".')
    assert words[4:7] == ["assert", "expression", ","] and tags[4:7] == ["B-CODE", "I-CODE", "O"]
    assert '"' not in words
    assert [t for w, t in zip(words, tags, strict=True) if t != "O"] == [
        "B-CODE", "I-CODE", "B-NAME", "I-NAME", "I-NAME", "I-NAME", "I-NAME", "B-KEYWORD",
    ]  # fmt: skip
    assert [span_type(s) for s in ("not in", "sys.exit", "len()", "x[i] = y", "'g'")] == [
        "KEYWORD", "NAME", "NAME", "CODE", "CODE",
    ]  # fmt: skip
    assert not is_prose("object.__add__(self, other)") and is_prose('See "len()" for details.')
    splits = code_span_sentences({0: "val", 1: "test"})
    assert all(s.document == 0 for s in splits["val"]) and all(s.document == 1 for s in splits["test"])
    train = splits["train"]
    assert len(train) > 1000
    for sentence in train[:300]:  # every entity's words were a quoted span of its help topic
        assert to_iob2(sentence.tags, "iob2") == sentence.tags
    assert {tag[2:] for s in train for tag in s.tags if tag != "O"} == {"KEYWORD", "NAME", "CODE"}
    assert np.mean([len(s.words) for s in train]) < 40
