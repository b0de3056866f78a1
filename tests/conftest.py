"""Shared helpers: tiny configs, the CLI runner, composed configs and generated image trees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

import vitrain.run  # noqa: F401  (registers the ${task_monitor:} resolver, as train.py does)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A ViT small enough for two CPU cores; timm accepts the size overrides.
TINY_VIT = [
    "+model.net.embed_dim=32",
    "+model.net.depth=2",
    "+model.net.num_heads=2",
]
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run_cli(run_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python train.py`` in a subprocess with its run directory at ``run_dir``.

    Uses ``logger=csv`` unless an override picks another logger (W&B runs cost seconds each).
    """
    if not any(o.startswith("logger=") for o in overrides):
        overrides = ("logger=csv", *overrides)
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={run_dir.parent / 'logs'}",
        f"paths.data_dir={run_dir.parent / 'data'}",
        *QUIET,
        *overrides,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def compose_train(*overrides: str, output_dir: str = "/tmp/vitrain-test-run"):
    """Compose ``conf/train.yaml`` as the CLI would, with Hydra's runtime values set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def write_image(path: Path, mode: str, size: int = 20, seed: int = 0) -> None:
    """Write a random image of PIL ``mode`` ("L", "RGB", "RGBA"); the suffix picks the format."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


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
