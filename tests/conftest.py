"""Shared fixtures. Helpers that tests import live in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitrain.run  # noqa: F401  (registers the ${task_monitor:} resolver, as train.py does)
from tests.helpers import write_image


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """ROOT/{train,val}/{cat,dog,fox}/ with JPEG and PNG files, grey, RGB and RGBA."""
    root = tmp_path / "images"
    kinds = [("L", ".jpg"), ("RGB", ".png"), ("RGB", ".jpg"), ("RGBA", ".png")]
    for split, count in (("train", 8), ("val", 4)):
        for c, name in enumerate(("cat", "dog", "fox")):
            for i in range(count):
                mode, suffix = kinds[i % len(kinds)]
                write_image(root / split / name / f"{i}{suffix}", mode, seed=100 * c + i)
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread: faster for tiny tensors, and much faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
