"""The embedded instruction-tuning set: questions about Python answered by Python's own docstrings.

Every record is built from the interpreter that runs vitrain (no download), and every answer is
text the interpreter ships or a fact it reports about itself:

* ``describe``: "Describe what the Python built-in `len` does." -> the first paragraph of the
  docstring (``inspect.getdoc``) that is not a signature line (``bool(x) -> bool``), for the
  built-in functions and classes and the public methods of the built-in types (``str.split``);
* ``signature``: "Write the signature of `str.split`." -> ``str.split(self, /, sep=None,
  maxsplit=-1)`` (``inspect.signature``), where the interpreter can give one;
* ``exception`` (a record with an ``input``): "Name the built-in Python exception with this
  description." + the first line of an exception's docstring -> its name.

The builtins that the ``site`` module adds (``help``, ``exit``, ``copyright``, ...) and aliases
(``IOError`` is ``OSError``) are left out. Records are grouped by the name they are about, the type
left out (``str.split``, ``bytes.split`` and ``bytearray.split`` share their docstrings almost word
for word, so they form one group), and the groups are split into train / validation / test with a
seed: the answers of the held-out splits are not near-copies of training answers.
"""

from __future__ import annotations

import builtins
import inspect

import numpy as np

# added by the site module (they differ between an interactive and an embedded interpreter)
_SITE_NAMES = {"copyright", "credits", "license", "exit", "quit", "help"}
_TYPES_WITH_METHODS = (str, bytes, bytearray, list, tuple, dict, set, frozenset, int, float, complex)


def description(obj) -> str | None:
    """The first paragraph of ``obj``'s docstring that is not a signature line, on one line."""
    doc = inspect.getdoc(obj) or ""
    for paragraph in doc.split("\n\n"):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        prose = [line for line in lines if "->" not in line]
        if prose and len(prose) == len(lines):
            return " ".join(prose)
    return None


def signature(obj, name: str) -> str | None:
    """``name`` followed by the signature the interpreter reports, or None when it has none."""
    try:
        return f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return None


def _subjects() -> list[tuple[str, object, bool]]:
    """``(qualified name, object, is an exception)`` of every object the set asks about, sorted."""
    out = []
    for name in dir(builtins):
        obj = getattr(builtins, name)
        if name.startswith("_") or name in _SITE_NAMES or not callable(obj):
            continue
        if isinstance(obj, type) and obj.__name__ != name:  # an alias (IOError is OSError)
            continue
        out.append((name, obj, isinstance(obj, type) and issubclass(obj, BaseException)))
    for kind in _TYPES_WITH_METHODS:
        for name in dir(kind):
            method = getattr(kind, name)
            if not name.startswith("_") and callable(method):
                out.append((f"{kind.__name__}.{name}", method, False))
    return sorted(out, key=lambda item: item[0])


def _records_about(name: str, obj, is_exception: bool) -> list[dict[str, str]]:
    """The records of one subject (see the module docstring)."""
    records = []
    text = description(obj)
    if is_exception:
        first_line = (inspect.getdoc(obj) or "").split("\n", 1)[0].strip()
        if first_line:
            records.append(
                {
                    "instruction": "Name the built-in Python exception with this description.",
                    "input": first_line,
                    "output": name,
                }
            )
        return records
    where = "method" if "." in name else "built-in"
    if text:
        records.append({"instruction": f"Describe what the Python {where} `{name}` does.", "output": text})
    sig = signature(obj, name)
    if sig:
        records.append({"instruction": f"Write the signature of `{name}`.", "output": sig})
    return records


def python_instructions(
    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[dict[str, str]]]:
    """``{"train", "val", "test": records}`` in the Alpaca layout (``instruction``, optional
    ``input``, ``output``); the groups of records (see the module docstring) are split with
    ``seed`` (at least one group per held-out split)."""
    by_name: dict[str, list[dict[str, str]]] = {}
    for item in _subjects():
        by_name.setdefault(item[0].rsplit(".", 1)[-1], []).extend(_records_about(*item))
    groups = [records for _, records in sorted(by_name.items()) if records]
    order = np.random.default_rng(seed).permutation(len(groups)).tolist()
    n_val = max(1, round(val_fraction * len(groups)))
    n_test = max(1, round(test_fraction * len(groups))) if test_fraction > 0 else 0
    where = {i: "val" for i in order[:n_val]} | {i: "test" for i in order[n_val : n_val + n_test]}
    splits: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}
    for i, records in enumerate(groups):
        splits[where.get(i, "train")] += records
    return splits
