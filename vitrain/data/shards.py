"""Where streaming shards live and what describes them, for the command that writes them
(``python -m vitrain.prepare``) and the DataModules that read them (``vitrain.data.stream``).

A shard folder is a local path or an object-store URI (``s3://``, ``gs://``, ... read and
written through fsspec); its ``vitrain.json`` (:data:`META_FILE`) holds the kind of data, the
splits and what the network needs to know (classes, vocabulary, packing).
"""

from __future__ import annotations

from pathlib import Path

META_FILE = "vitrain.json"
FORMAT_VERSION = 1


def join(root: str, *parts: str) -> str:
    """``root/parts`` for a local path or an object-store URI (``s3://``, ``gs://``, ...)."""
    return "/".join([root.rstrip("/"), *parts])


def is_remote(path: str) -> bool:
    """Whether ``path`` is an object-store URI (anything with a scheme but ``file://``)."""
    return "://" in path and not path.startswith("file://")


def write_text(path: str, text: str) -> None:
    """Write a small file locally or to an object store (through fsspec)."""
    if is_remote(path):
        import fsspec

        with fsspec.open(path, "w") as f:
            f.write(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def read_text(path: str) -> str:
    """Read a small file from a local path or an object store (through fsspec)."""
    if is_remote(path):
        import fsspec

        with fsspec.open(path, "r") as f:
            return f.read()
    return Path(path).read_text()
