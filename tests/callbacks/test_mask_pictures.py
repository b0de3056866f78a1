"""Mask pictures: three tiles per image (true, point, box), written as PNG; wrong model refused."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from vitrain.callbacks.masks import POINT, TRUTH, MaskPictures, draw_masks
from vitrain.data.segmentation import ShapesMasksDataModule
from vitrain.errors import UserError
from vitrain.models.sam_weights import create_sam
from vitrain.tasks.segmentation import SegmentationTask


def test_render_writes_three_tiles_per_image(tmp_path):
    dm = ShapesMasksDataModule(image_size=32, train_size=2, val_size=2, batch_size=2)
    dm.setup()
    net = create_sam("sam_tiny", image_size=32, encoder_depth=2, encoder_global_attn_indexes=(1,))
    task = SegmentationTask(net, partial(torch.optim.AdamW, lr=1e-3))
    callback = MaskPictures(num_images=2, tile_size=48)
    path = tmp_path / "masks" / "epoch000.png"
    grid = callback.render(task, [dm.val_set[0], dm.val_set[1]], path)
    assert Image.open(path).size == (3 * 50 + 2, 2 * 50 + 2) and grid.shape == (2 * 50 + 2, 3 * 50 + 2, 3)
    assert task.training  # the task's mode is restored


def test_draw_masks_blends_the_colour_and_marks_the_point():
    pixels = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((1, 8, 8), bool)
    mask[0, :4] = True
    tile = draw_masks(pixels, mask, TRUTH, 8)
    assert tuple(tile[1, 1]) == tuple(int(0.5 * c) for c in TRUTH) and tuple(tile[6, 6]) == (0, 0, 0)
    tile = draw_masks(pixels, np.zeros((0, 8, 8), bool), POINT, 80, points=[[4.0, 4.0]])
    assert tuple(tile[45, 45]) == POINT


def test_refuses_a_model_without_prompts():
    with pytest.raises(UserError, match="needs a segmentation model"):
        MaskPictures().setup(None, torch.nn.Linear(1, 1), "fit")
