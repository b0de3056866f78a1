"""The embedded tagging task: find the code in the prose of CPython's help topics (no download).

The help texts that ship with CPython (``pydoc_data.topics``, the corpus of ``data=text``) mark
every piece of code inside a sentence as a literal, rendered between double quotes: ``The
extended form, "assert expression1, expression2", is equivalent to``. The task removes the
quotes and asks for the spans back, typed by what the quoted text is:

* ``KEYWORD``: every word of the span is a Python keyword (``"if"``, ``"not in"``, ``"async for"``);
* ``NAME``: one identifier or dotted name, optionally called with no arguments
  (``"__debug__"``, ``"sys.exit"``, ``"len()"``);
* ``CODE``: any other code (``"x[i] = y"``, ``"*"``, ``"'g'"``, ``"0 <= x <= 255"``).

So the tags are true of the text: the documentation's authors marked each span as code, the type
follows from the span alone (``keyword.iskeyword``, a regular expression). Words are the runs of
letters, digits and underscores and the single punctuation marks (``\\w+|[^\\w\\s]``), as CoNLL
files separate punctuation. Only prose paragraphs are used: indented blocks (code samples and
grammar rules), headings, tables, paragraphs with an odd number of quote marks and paragraphs whose
unquoted text is mostly not English words (method signatures such as ``str.upper()``) are skipped. Sentences
end at an untagged ``.``, ``!`` or ``?`` followed by a capital letter or the end of the paragraph.

Topics are split into train / validation / test as ``data=text`` splits the same documents
(:func:`vitrain.data.text.held_out_split` with the same fractions and seed), so a BERT pretrained on
the embedded corpus never saw the validation or test sentences, quotes included.
"""

from __future__ import annotations

import keyword
import re

from vitrain.data.conll import OUTSIDE, Sentence

ENTITY_TYPES = ("KEYWORD", "NAME", "CODE")
_WORD = re.compile(r"\w+|[^\w\s]")
_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\(\))?")
_RULE = re.compile(r"[*=\-~^]+")  # reST heading underlines
_TABLE = re.compile(r"^[+|]", re.MULTILINE)  # a line of a grid table
_SENTENCE_END = {".", "!", "?"}


def span_type(span: str) -> str:
    """The entity type of the text of one quoted span (see the module docstring)."""
    words = span.split()
    if words and all(keyword.iskeyword(w) for w in words):
        return "KEYWORD"
    if _NAME.fullmatch(span.strip()):
        return "NAME"
    return "CODE"


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of a help topic, each joined into one line: no indented block, no
    heading (a paragraph whose last line is a reST underline), no table, no paragraph with
    unpaired quotes, none that :func:`is_prose` rejects."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if not lines or lines[0][:1].isspace() or _RULE.fullmatch(lines[-1].strip()):
            continue
        if _TABLE.search(paragraph):
            continue
        joined = " ".join(line.strip() for line in lines)
        if joined.count('"') % 2 == 0 and is_prose(joined):
            out.append(joined)
    return out


def is_prose(paragraph: str) -> bool:
    """Whether the text outside the quoted spans is English: at least 3 words, half of them
    alphabetic, no interpreter session (``>>>``). Signature lines such as
    ``object.__add__(self, other)`` and ``str.upper()`` are not."""
    words = _WORD.findall(" ".join(paragraph.split('"')[0::2]))
    alphabetic = sum(1 for word in words if word.isascii() and word.isalpha())
    return len(words) >= 3 and 2 * alphabetic >= len(words) and ">>>" not in paragraph


def tag_paragraph(paragraph: str) -> tuple[list[str], list[str]]:
    """Words and IOB2 tags of one prose paragraph: the quoted spans become entities, the quote
    marks are dropped."""
    words: list[str] = []
    tags: list[str] = []
    for i, piece in enumerate(paragraph.split('"')):
        pieces = _WORD.findall(piece)
        if i % 2 == 0 or not pieces:  # outside quotes (or an empty literal "")
            words += pieces
            tags += [OUTSIDE] * len(pieces)
            continue
        kind = span_type(piece)
        words += pieces
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(pieces) - 1)
    return words, tags


def split_sentences(words: list[str], tags: list[str]) -> list[tuple[list[str], list[str]]]:
    """Cut a paragraph after each untagged ``.``/``!``/``?`` followed by a capitalised word."""
    out, start = [], 0
    for i, (word, tag) in enumerate(zip(words, tags, strict=True)):
        at_end = i + 1 == len(words)
        if at_end or (word in _SENTENCE_END and tag == OUTSIDE and words[i + 1][:1].isupper()):
            out.append((words[start : i + 1], tags[start : i + 1]))
            start = i + 1
    return out


def topic_sentences(text: str, topic: str, document: int) -> list[Sentence]:
    """The tagged sentences of one help topic."""
    out = []
    for number, paragraph in enumerate(prose_paragraphs(text)):
        for words, tags in split_sentences(*tag_paragraph(paragraph)):
            out.append(Sentence(words, tags, f"help topic {topic!r}, paragraph {number + 1}", document))
    return out


def code_span_sentences(held_out: dict[int, str]) -> dict[str, list[Sentence]]:
    """``{"train", "val", "test": sentences}`` of the embedded task; ``held_out`` maps a topic's
    index (sorted topic names, as ``data=text`` orders its embedded documents) to ``"val"`` or
    ``"test"``, every other topic is training data."""
    from pydoc_data.topics import topics

    splits: dict[str, list[Sentence]] = {"train": [], "val": [], "test": []}
    for index, name in enumerate(sorted(topics)):
        splits[held_out.get(index, "train")] += topic_sentences(topics[name], name, index)
    return splits
