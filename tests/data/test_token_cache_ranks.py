"""The text token cache is built once per node: local rank 0 builds it, the others wait."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, write_txt_corpus
from vitrain.data.text import TextDataModule
from vitrain.errors import UserError

WAITER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from vitrain.data.text import TextDataModule
data = TextDataModule(files=sys.argv[1], vocab_size=300, seq_len=32, cache_dir=sys.argv[2], cache_wait_s=120)
data.setup()
print("built" if data.cache_built else "reused", data.cache_path, len(data.train_set))
"""


@pytest.mark.slow
def test_other_local_ranks_wait_for_local_rank_zero(tmp_path, monkeypatch):
    corpus, cache = write_txt_corpus(tmp_path / "corpus"), tmp_path / "cache"
    env = {**os.environ, "LOCAL_RANK": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAITER, str(corpus), str(cache)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in waiter.stderr:  # build only once the other rank is known to be waiting
        if "Waiting for local rank 0" in line:
            break
    monkeypatch.setenv("LOCAL_RANK", "0")
    builder = TextDataModule(files=str(corpus), vocab_size=300, seq_len=32, cache_dir=str(cache))
    builder.setup()
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert builder.cache_built
    assert out.split() == ["reused", str(builder.cache_path), str(len(builder.train_set))]
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1  # one cache, no leftover temporaries


def test_waiting_rank_fails_clearly_when_no_cache_appears(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    data = TextDataModule(
        files=str(write_txt_corpus(tmp_path / "corpus")), cache_dir=str(tmp_path / "cache"), cache_wait_s=0.2
    )
    with pytest.raises(UserError, match=r"local rank 3 waited 0.2 s .*data.cache_dir=.*data.cache_wait_s"):
        data.setup()
