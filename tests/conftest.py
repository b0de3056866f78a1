"""Shared fixtures and suite-wide settings. Helpers that tests import live in ``tests/helpers.py``.

The suite runs on two CPU cores, usually as two pytest-xdist workers (``make test``: ``-n 2
--dist loadgroup``). Every process therefore uses ONE intra-op thread (two per process
oversubscribe the cores and make tiny tensors several times slower), train.py subprocesses
included (``OMP_NUM_THREADS``). Tests that must not run next to each other, or that share an
expensive module-scoped fixture, carry ``pytest.mark.xdist_group(name)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

import vitrain.run  # noqa: F401  (registers the ${task_monitor:} resolver, as train.py does)
from tests.helpers import write_image

# the longest tests first, so that two workers finish together (xdist hands out tests in order)
FIRST = (
    "test_compile_smoke",
    "test_default_run",
    "test_signal_saves_checkpoint",
    "test_two_process_ddp",
    "test_multirun_with_ddp",
)


def pytest_configure(config: pytest.Config) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by train.py subprocesses
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        for i, prefix in enumerate(FIRST):
            if item.name.startswith(prefix):
                return i
        return len(FIRST)

    items.sort(key=rank)  # stable: the others keep their order (module fixtures are built once)


@pytest.fixture(autouse=True)
def logger_levels_restored():
    """Each test starts with the log levels the suite started with: a test that runs a bench
    module or a tool in this process (which quiet Lightning's or vitrain's loggers, as their own
    process may) must not hide the log lines a later test on the same worker asserts."""

    def loggers() -> list[logging.Logger]:
        named = logging.root.manager.loggerDict.values()
        return [logging.root, *(logger for logger in named if isinstance(logger, logging.Logger))]

    saved = {logger: (logger.level, logger.disabled, logger.propagate) for logger in loggers()}
    yield
    for logger in loggers():
        level, logger.disabled, logger.propagate = saved.get(logger, (logging.NOTSET, False, True))
        logger.setLevel(level)


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
