"""CoNLL-2003 named-entity files: reading, tag schemes, entities, the layouts of the distribution.

The shared-task files (Tjong Kim Sang & De Meulder 2003) hold one token per line with its
annotations in whitespace-separated columns (English: ``token POS chunk NER``; German adds a
lemma), a blank line between sentences and a ``-DOCSTART- -X- O O`` line at the start of each
document. The NER column is in IOB1 as distributed (an entity starts with ``I-`` unless it directly
follows an entity of the same type, then ``B-``); copies such as the ``train.txt`` /
``valid.txt`` / ``test.txt`` variant may be in IOB2 (every entity starts with ``B-``).

Entities are read the way ``conlleval`` (the shared task's scorer) reads chunks, which is the same
for both schemes: ``B-X`` starts one, ``I-X`` continues one of type X and starts one after ``O`` or
another type (:func:`entities`, through ``seqeval``'s ``get_entities``, which follows
conlleval's rules). Tags are converted to IOB2 once when read (:func:`to_iob2`), so a model learns one
consistent label per position, and back to the files' scheme when written (:func:`from_iob2`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitrain.errors import UserError, require_choice

DOCSTART = "-DOCSTART-"
SCHEMES = ("iob1", "iob2")
OUTSIDE = "O"

# the file names of each layout of the distribution: (train, validation, test)
LAYOUTS: dict[str, tuple[str, str, str]] = {
    # the shared task's own files (English; German: deu.train / deu.testa / deu.testb)
    "eng": ("eng.train", "eng.testa", "eng.testb"),
    "deu": ("deu.train", "deu.testa", "deu.testb"),
    # the copy most downloads give (Hugging Face's conll2003 loader reads these names)
    "txt": ("train.txt", "valid.txt", "test.txt"),
}


@dataclass
class Sentence:
    """The words of one sentence with their tags (IOB2 once read), and where it starts."""

    words: list[str]
    tags: list[str]
    where: str = ""  # file:line of the first word (for messages)
    document: int = 0  # its document: the number of -DOCSTART- lines before it
    columns: list[list[str]] = field(default_factory=list)  # every column of each line, as read


def read_conll(
    path: str | Path,
    token_column: int = 0,
    tag_column: int = -1,
    columns: int | None = None,
    scheme: str = "iob1",
    encoding: str = "utf-8",
    key: str = "data.root",
    tagged: bool = True,
) -> list[Sentence]:
    """The sentences of a CoNLL file, tags converted from ``scheme`` to IOB2.

    Args:
        path: the file.
        token_column, tag_column: column of the word and of its tag (negative: from the end;
            CoNLL-2003's NER tag is the last of 4 columns).
        columns: the number of columns every line must have; None: the number of the file's
            first word line. A line with another count is one :class:`UserError` naming
            ``file:line``.
        scheme: ``iob1`` or ``iob2``, the scheme of the file's tags.
        encoding: the files' text encoding (the German files are ``latin-1``).
        key: the config entry that named the file (for messages).
        tagged: False reads words only (a file to tag: one column is enough); tags are then ``O``.
    """
    require_choice("data.scheme", scheme, SCHEMES)
    path = Path(path)
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise UserError(
            f"{key}: cannot read {path} as {encoding} ({err.reason} at byte {err.start}): set data.encoding "
            "(the German CoNLL-2003 files are latin-1)."
        ) from err
    except OSError as err:
        raise UserError(f"{key}: cannot read {path} ({err.strerror or err}).") from err
    sentences: list[Sentence] = []
    current: list[list[str]] = []
    start, document = 0, 0

    def close() -> None:
        if current:
            words = [row[token_column] for row in current]
            tags = [row[tag_column] for row in current] if tagged else [OUTSIDE] * len(current)
            sentences.append(Sentence(words, tags, f"{path}:{start}", document, list(current)))
            current.clear()

    for number, line in enumerate(lines, 1):
        row = line.split()
        if not row:
            close()
            continue
        if row[0] == DOCSTART:
            close()
            document += 1
            continue
        if columns is None:
            columns = len(row)
            check_columns(columns, token_column, tag_column if tagged else token_column, path, number)
        if len(row) != columns:
            raise UserError(
                f"{path}:{number} has {len(row)} column(s) where the file's lines have {columns} "
                f"({line.strip()[:60]!r}): CoNLL lines are 'token ... tag' separated by spaces, the same "
                "number on every line (CoNLL-2003: token POS chunk NER); fix the line, or set data.columns."
            )
        if not current:
            start = number
        current.append(row)
    close()
    if tagged:
        for sentence in sentences:
            sentence.tags = to_iob2(sentence.tags, scheme, sentence.where)
    return sentences


def check_columns(columns: int, token_column: int, tag_column: int, path: Path, number: int) -> None:
    """Fail when the configured token or tag column is not among the file's ``columns``."""
    for name, index in (("token_column", token_column), ("tag_column", tag_column)):
        if not -columns <= index < columns:
            raise UserError(
                f"data.{name}={index}, but {path}:{number} has {columns} column(s): pick a column from "
                f"0 to {columns - 1} (negative counts from the end; CoNLL-2003's NER tag is -1)."
            )


def split_tag(tag: str, where: str = "") -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``, ``"O"`` -> ``("O", "")``; anything else is a UserError."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise UserError(
            f"{where}: the tag {tag!r} is not an IOB tag (O, B-TYPE or I-TYPE): check data.tag_column, "
            "or convert the file's tags (IOBES / BILOU are not read)."
        )
    return prefix, kind


def entities(tags: list[str], where: str = "") -> list[tuple[str, int, int]]:
    """The entities ``(type, first, last)`` (inclusive word indices) of one sentence's tags, as
    ``conlleval`` finds chunks (``seqeval``'s ``get_entities``): ``B-X`` starts one; ``I-X`` starts
    one after ``O`` or another type and continues one of type X otherwise. The same for IOB1 and
    IOB2; a tag that is not ``O``, ``B-X`` or ``I-X`` is a UserError naming ``where``."""
    from seqeval.metrics.sequence_labeling import get_entities

    for tag in tags:
        split_tag(tag, where)
    return get_entities(list(tags))


def to_iob2(tags: list[str], scheme: str = "iob1", where: str = "") -> list[str]:
    """Tags of either scheme in IOB2 (every entity starts with ``B-``).

    With ``scheme="iob2"`` an ``I-X`` that starts an entity is an error (the file is IOB1:
    set data.scheme=iob1)."""
    out = [OUTSIDE] * len(tags)
    for kind, first, last in entities(tags, where):
        if scheme == "iob2" and tags[first].startswith("I-"):
            raise UserError(
                f"{where}: word {first + 1} of the sentence starts an entity with {tags[first]!r}, which "
                "IOB2 never does: the file is IOB1 (CoNLL-2003 as distributed), set data.scheme=iob1."
            )
        out[first] = f"B-{kind}"
        out[first + 1 : last + 1] = [f"I-{kind}"] * (last - first)
    return out


def from_iob2(tags: list[str], scheme: str = "iob1") -> list[str]:
    """IOB2 tags (or any tags: entities are read as ``conlleval`` reads them) in ``scheme``.

    IOB1 writes ``B-X`` only for an entity that directly follows another entity of type X."""
    out = [OUTSIDE] * len(tags)
    previous_end, previous_kind = -2, ""
    for kind, first, last in entities(tags):
        adjacent = first == previous_end + 1 and kind == previous_kind
        start = "B" if scheme == "iob2" or adjacent else "I"
        out[first] = f"{start}-{kind}"
        out[first + 1 : last + 1] = [f"I-{kind}"] * (last - first)
        previous_end, previous_kind = last, kind
    return out


def tag_names(sentences: list[Sentence]) -> list[str]:
    """The tag set of IOB2 sentences: ``O`` first, then ``B-X``, ``I-X`` per entity type (sorted),
    both for every type found (a type seen only as single-word entities still gets ``I-X``)."""
    kinds = sorted({tag[2:] for s in sentences for tag in s.tags if tag != OUTSIDE})
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in kinds for prefix in ("B", "I")]


def find_layout(root: str | Path, key: str = "data.root") -> tuple[Path, Path, Path | None]:
    """The (train, validation, test) files of a CoNLL-2003 folder in any layout of
    :data:`LAYOUTS` (the test file may be absent: None)."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"{key}={root}: no such folder. Point it at the folder holding eng.train or train.txt."
        )
    for names in LAYOUTS.values():
        train, val, test = (folder / name for name in names)
        if train.is_file():
            if not val.is_file():
                raise UserError(
                    f"{key}={root}: {train.name} is there but not {val.name} (the validation file)."
                )
            return train, val, test if test.is_file() else None
    expected = "; ".join(" + ".join(names) for names in LAYOUTS.values())
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise UserError(
        f"{key}={root}: no CoNLL-2003 files (expected {expected}; found {found}). Name the files with "
        "data.train_file, data.val_file and data.test_file."
    )


def write_conll(path: Path, sentences: list[list[list[str]]]) -> None:
    """Write sentences (each a list of rows, a row a list of columns) as a CoNLL file: one space
    between columns, a blank line after each sentence."""
    with open(path, "w", encoding="utf-8") as out:
        for sentence in sentences:
            out.writelines(" ".join(row) + "\n" for row in sentence)
            out.write("\n")
