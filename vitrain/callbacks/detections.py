"""Detection pictures: predicted and ground-truth boxes on fixed validation images."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from vitrain.data.detection import collate_detection
from vitrain.errors import UserError, require_positive
from vitrain.loggers import log_images
from vitrain.models.box_ops import to_original_xyxy

log = logging.getLogger(__name__)

# every box is drawn over a black outline, so it stays visible on objects of its own colour
TRUTH_COLOUR, PREDICTION_COLOUR, OUTLINE = (255, 255, 255), (230, 30, 30), (0, 0, 0)


class Detections(L.Callback):
    """Every ``every_n_epochs`` validation, draw what the detector finds on fixed images.

    The first ``num_images`` validation images (the same ones every time) go through the
    task's ``detect``; each is shown at its original aspect ratio, scaled to fit a
    ``tile_size`` square, with the ground-truth boxes in white and the predictions scoring at
    least ``score_threshold`` in red (each over a black outline, visible on any colour), labelled ``class score``. The tiles form a grid of
    ``columns`` columns. Written to ``<dirpath>/epoch<NNN>.png`` (``dirpath`` defaults to
    ``<trainer.default_root_dir>/detections``) on rank zero and logged to the W&B /
    TensorBoard loggers under ``detections``.

    Args:
        dirpath: folder of the PNG files (None: ``<trainer.default_root_dir>/detections``).
        num_images: validation images shown (fewer when the validation set is smaller).
        every_n_epochs: draw after every n-th validation epoch (sanity checks skipped).
        score_threshold: lowest score of a prediction that is drawn.
        tile_size: side of each image's square tile, pixels.
        columns: tiles per row of the grid.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        num_images: int = 8,
        every_n_epochs: int = 1,
        score_threshold: float = 0.5,
        tile_size: int = 256,
        columns: int = 4,
    ) -> None:
        require_positive(
            "callbacks.detections", num_images=num_images, every_n_epochs=every_n_epochs, columns=columns
        )
        self.dirpath = Path(dirpath) if dirpath else None
        self.num_images, self.every_n_epochs = num_images, every_n_epochs
        self.score_threshold, self.tile_size, self.columns = score_threshold, tile_size, columns

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "detect", None)):
            raise UserError(
                f"callbacks.detections needs a detection model (model=detr_*), not "
                f"{type(pl_module).__name__}: use callbacks=default with this model."
            )
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "detections"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = validation_samples(trainer, self.every_n_epochs, self.num_images, "detections")
        if samples is None:
            return
        images, mask, targets = collate_detection(samples)
        was_training = pl_module.training
        pl_module.eval()
        try:
            device = pl_module.device
            predictions = pl_module.detect(images.to(device), mask.to(device), targets)
        finally:
            pl_module.train(was_training)
        grid = self.draw(trainer.datamodule, images, mask, targets, predictions)
        epoch = trainer.current_epoch
        path = self.dirpath / f"epoch{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        log.info("Detections of epoch %d: %s", epoch, path)
        caption = f"epoch {epoch}: ground truth (white), predictions >= {self.score_threshold} (red)"
        log_images(trainer.loggers, "detections", [grid], captions=[caption], step=trainer.global_step)

    def draw(self, datamodule, images, mask, targets, predictions) -> np.ndarray:
        """One uint8 ``(rows * tile, columns * tile, 3)`` picture of all tiles."""
        mean = torch.tensor(getattr(datamodule, "mean", (0.0, 0.0, 0.0))).view(-1, 1, 1)
        std = torch.tensor(getattr(datamodule, "std", (1.0, 1.0, 1.0))).view(-1, 1, 1)
        classes = list(getattr(datamodule, "classes", []) or [])
        tiles = []
        for image, pad, target, pred in zip(images, mask, targets, predictions, strict=True):
            height, width = int((~pad).any(1).sum()), int((~pad).any(0).sum())
            pixels = ((image[:, :height, :width] * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0)
            keep = pred["scores"] >= self.score_threshold
            pred = {k: v[keep].cpu() for k, v in pred.items()}
            truth = ground_truth_boxes(target)
            tiles.append(draw_tile(pixels.numpy(), target["orig_size"], truth, pred, classes, self.tile_size))
        return tile_grid(tiles, self.columns)


def ground_truth_boxes(target: dict) -> dict:
    """The target's boxes as absolute xyxy in original image coordinates, and its labels."""
    return {"boxes": to_original_xyxy(target["boxes"], target["orig_size"]), "labels": target["labels"]}


def draw_tile(
    pixels: np.ndarray, orig_size, truth: dict, pred: dict, classes: list[str], tile: int
) -> np.ndarray:
    """Draw boxes (absolute xyxy in ``orig_size`` (height, width) coordinates) on the image
    ``pixels (H, W, 3)`` scaled to fit a white ``tile`` x ``tile`` square."""
    height, width = int(orig_size[0]), int(orig_size[1])
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.new("RGB", (tile, tile), "white")
    picture.paste(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(picture)
    for boxes, labels, scores, colour in (
        (truth["boxes"], truth["labels"], None, TRUTH_COLOUR),
        (pred["boxes"], pred["labels"], pred["scores"], PREDICTION_COLOUR),
    ):
        for i, box in enumerate((boxes.float() * scale).tolist()):
            draw.rectangle(box, outline=OUTLINE, width=4)
            draw.rectangle(box, outline=colour, width=2)
            label = int(labels[i])
            text = classes[label] if label < len(classes) else str(label)
            if scores is not None:
                text = f"{text} {float(scores[i]):.2f}"
            draw.text((box[0] + 3, box[1] + 2), text, fill=colour, stroke_width=1, stroke_fill=OUTLINE)
    return np.asarray(picture)


def validation_samples(trainer: L.Trainer, every_n_epochs: int, count: int, name: str) -> list | None:
    """The first ``count`` validation samples when a picture callback ``callbacks.<name>`` is due
    (rank zero, not the sanity check, every ``every_n_epochs`` epochs); None otherwise."""
    if trainer.sanity_checking or not trainer.is_global_zero or (trainer.current_epoch + 1) % every_n_epochs:
        return None
    dataset = getattr(trainer.datamodule, "val_set", None)
    if dataset is None or len(dataset) == 0:
        log.warning("callbacks.%s: no validation images, nothing to show", name)
        return None
    return [dataset[i] for i in range(min(count, len(dataset)))]


def tile_grid(tiles: list[np.ndarray], columns: int, padding: int = 2) -> np.ndarray:
    """Square tiles ``(T, T, 3)`` in rows of ``columns``, separated by white ``padding``."""
    size = tiles[0].shape[0]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.full(
        (rows * (size + padding) + padding, columns * (size + padding) + padding, 3), 255, np.uint8
    )
    for i, tile in enumerate(tiles):
        top, left = padding + (i // columns) * (size + padding), padding + (i % columns) * (size + padding)
        grid[top : top + size, left : left + size] = tile
    return grid
