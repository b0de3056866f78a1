"""A folder of prepared data (token files, encoded examples) built once per node and reused.

:class:`NodeCache` is the one implementation of "build once, reuse, wait on other ranks" that the
text DataModules share (``data=text``, the fine-tuning data of ``vitrain.data.finetune``):

* the folder is ``root/<key>``, where the key is a hash of everything the content depends on
  (:func:`fingerprint`: settings, the source files' paths, sizes and modification times, the
  content of small files such as a tokenizer): a second run with the same inputs reuses it,
  a changed input builds a new folder;
* the node's local rank zero builds it in a temporary folder next to it and renames it into
  place when complete (``meta.json``, written last, marks a complete folder); the other
  processes of the node wait for ``meta.json``, up to ``wait_s`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from vitrain.errors import UserError

log = logging.getLogger(__name__)

META = "meta.json"


def local_rank() -> int:
    """This process's rank within its node, from the launcher's environment (0 when alone)."""
    for variable in ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def fingerprint(settings: Iterable, files: Iterable[Path] = (), contents: Iterable[Path] = ()) -> str:
    """A 20-hex-digit key of ``settings`` (their ``repr``), the ``files`` (resolved path, size,
    modification time: cheap for large corpora) and the bytes of the ``contents`` files that
    exist (tokenizer files: their content, wherever they live)."""
    h = hashlib.sha256(repr(list(settings)).encode())
    for path in files:
        stat = path.stat()
        h.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    for path in contents:
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:20]


class NodeCache:
    """The cache folder ``root/key``, built by :meth:`get` once per node.

    Args:
        root: the cache directory (``data.cache_dir``).
        key: the folder name: a prefix naming the content plus a :func:`fingerprint`.
        wait_s: how long the other processes of a node wait for local rank zero to build it.
        wait_key: the config key of ``wait_s``, for the message when the wait runs out.
    """

    def __init__(
        self, root: str | Path, key: str, wait_s: float, wait_key: str = "data.cache_wait_s"
    ) -> None:
        self.root, self.key, self.wait_s, self.wait_key = Path(root), key, wait_s, wait_key
        self.path = self.root / key

    def ready(self) -> bool:
        """Whether the folder is complete (its ``meta.json`` exists)."""
        return (self.path / META).is_file()

    def meta(self) -> dict:
        """The ``meta.json`` of a complete folder."""
        return json.loads((self.path / META).read_text())

    def get(self, build: Callable[[Path], dict]) -> bool:
        """Make sure the folder exists; returns whether this process built it.

        ``build(folder)`` writes the content into an empty temporary ``folder`` and returns the
        dict that becomes ``meta.json``; it runs in the node's local rank zero only."""
        if self.ready():
            log.info("Reusing the cache %s", self.path)
            return False
        if local_rank() != 0:
            self._wait()
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=self.path.name + ".tmp-", dir=self.root))
        try:
            meta = build(tmp)
            (tmp / META).write_text(json.dumps(meta, indent=2))
            try:
                os.replace(tmp, self.path)
            except OSError:  # another process (a DDP rank) finished the same cache first
                if not self.ready():
                    shutil.rmtree(self.path, ignore_errors=True)
                    os.replace(tmp, self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def _wait(self) -> None:
        """Wait until the node's local rank zero has completed the folder."""
        log.info("Waiting for local rank 0 to build the cache %s", self.path)
        deadline = time.monotonic() + self.wait_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise UserError(
                    f"local rank {local_rank()} waited {self.wait_s:g} s for local rank 0 to build the "
                    f"cache {self.path} (data.cache_dir={self.root}): check rank 0's log for an error, or "
                    f"build the cache first with one process and raise {self.wait_key}."
                )
            time.sleep(0.5)
