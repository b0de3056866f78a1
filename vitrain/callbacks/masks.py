"""Segmentation pictures: prompts, predicted and true masks on fixed validation images."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from vitrain.callbacks.detections import tile_grid, validation_samples
from vitrain.data.segmentation import SAM_MEAN, SAM_STD, collate_segmentation
from vitrain.errors import UserError, require_positive
from vitrain.loggers import log_images

log = logging.getLogger(__name__)

TRUTH, POINT, BOX = (0, 200, 0), (230, 30, 30), (40, 90, 240)


class MaskPictures(L.Callback):
    """Every ``every_n_epochs`` validation, show what the model segments from fixed prompts.

    For each of the first ``num_images`` validation images (the same ones every time) three
    tiles: the true masks (green); the masks predicted from each object's centre point (red,
    point drawn); the masks predicted from each object's box (blue, box drawn). Written to
    ``<dirpath>/epoch<NNN>.png`` on rank zero (``dirpath`` defaults to
    ``<trainer.default_root_dir>/masks``) and logged to the W&B / TensorBoard loggers under
    ``masks``.

    Args:
        dirpath: folder of the PNG files (None: ``<trainer.default_root_dir>/masks``).
        num_images: validation images shown, one row of three tiles each.
        every_n_epochs: draw after every n-th validation epoch (sanity checks skipped).
        tile_size: side of each square tile, pixels.
    """

    def __init__(
        self, dirpath: str | None = None, num_images: int = 4, every_n_epochs: int = 1, tile_size: int = 192
    ) -> None:
        require_positive(
            "callbacks.masks", num_images=num_images, every_n_epochs=every_n_epochs, tile_size=tile_size
        )
        self.dirpath = Path(dirpath) if dirpath else None
        self.num_images, self.every_n_epochs, self.tile_size = num_images, every_n_epochs, tile_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "predict_prompts", None)):
            raise UserError(
                f"callbacks.masks needs a segmentation model (model=sam_*), not {type(pl_module).__name__}: "
                "use callbacks=default with this model."
            )
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "masks"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = validation_samples(trainer, self.every_n_epochs, self.num_images, "masks")
        if samples is None:
            return
        path = self.dirpath / f"epoch{trainer.current_epoch:03d}.png"
        grid = self.render(pl_module, samples, path)
        log.info("Mask pictures of epoch %d: %s", trainer.current_epoch, path)
        caption = (
            f"epoch {trainer.current_epoch}: true (green), from the centre point (red), from the box (blue)"
        )
        log_images(trainer.loggers, "masks", [grid], captions=[caption], step=trainer.global_step)

    def render(self, pl_module: L.LightningModule, samples: list, path: Path) -> np.ndarray:
        """Predict on ``samples`` and write the picture to ``path``; returns the picture."""
        images, targets = collate_segmentation(samples)
        was_training = pl_module.training
        pl_module.eval()
        try:
            out = pl_module.predict_prompts(images.to(pl_module.device), targets)
        finally:
            pl_module.train(was_training)
        out = {k: v.cpu() for k, v in out.items()}
        tiles = []
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            h, w = (int(v) for v in target["input_size"])
            pixels = image_pixels(image)[:h, :w]
            mine = out["image_index"] == i
            tiles.append(self.tile(pixels, out["true_masks"][mine][:, :h, :w], TRUTH))
            tiles.append(
                self.tile(pixels, out["point_masks"][mine][:, :h, :w], POINT, points=out["points"][mine])
            )
            tiles.append(self.tile(pixels, out["box_masks"][mine][:, :h, :w], BOX, boxes=out["boxes"][mine]))
        grid = tile_grid(tiles, columns=3)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        return grid

    def tile(self, pixels: np.ndarray, masks: torch.Tensor, colour, points=None, boxes=None) -> np.ndarray:
        """``pixels (h, w, 3)`` with ``masks (N, h, w)`` blended in ``colour``, scaled to a tile."""
        return draw_masks(pixels, masks, colour, self.tile_size, points, boxes)


def image_pixels(image: torch.Tensor) -> np.ndarray:
    """A normalised ``(3, S, S)`` frame -> uint8 ``(S, S, 3)``."""
    mean, std = torch.tensor(SAM_MEAN).view(3, 1, 1), torch.tensor(SAM_STD).view(3, 1, 1)
    return (image * std + mean).clamp(0, 255).byte().permute(1, 2, 0).numpy()


def draw_masks(pixels: np.ndarray, masks, colour, tile: int, points=None, boxes=None) -> np.ndarray:
    """Blend each mask in ``colour`` (half opacity, outlined) over ``pixels``, draw the prompts,
    scale to fit a white ``tile`` square."""
    out = pixels.astype(np.float32)
    col = np.array(colour, np.float32)
    for mask in np.asarray(masks, dtype=bool):
        out[mask] = 0.5 * out[mask] + 0.5 * col
    h, w = pixels.shape[:2]
    scale = tile / max(h, w)
    picture = Image.new("RGB", (tile, tile), "white")
    picture.paste(
        Image.fromarray(out.astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    )
    draw = ImageDraw.Draw(picture)
    for x, y in [] if points is None else ((np.asarray(points, np.float32) + 0.5) * scale).tolist():
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline="white")
    for box in [] if boxes is None else (np.asarray(boxes, np.float32) * scale).tolist():
        draw.rectangle(box, outline=colour, width=2)
    return np.asarray(picture)
