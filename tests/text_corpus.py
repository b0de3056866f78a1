"""A small generated corpus for the language tests: predictable sentences, many documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the teacher", "a robot"]
VERBS = ["sees", "likes", "follows", "finds", "helps", "calls"]
OBJECTS = ["the ball", "a tree", "the river", "an apple", "the house", "a book"]


def sentence(rng: np.random.Generator) -> str:
    s, v, o = (rng.integers(6) for _ in range(3))
    return f"{SUBJECTS[s].capitalize()} {VERBS[v]} {OBJECTS[o]}."


def documents(count: int = 40, sentences: int = 12, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(sentence(rng) for _ in range(sentences)) for _ in range(count)]


def write_txt_corpus(folder: Path, count: int = 40, sentences: int = 12, seed: int = 0) -> Path:
    """``folder/doc<i>.txt``, one document per file."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(documents(count, sentences, seed)):
        (folder / f"doc{i:03d}.txt").write_text(doc + "\n")
    return folder


def write_jsonl_corpus(path: Path, count: int = 40, sentences: int = 12, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents(count, sentences, seed)))
    return path
