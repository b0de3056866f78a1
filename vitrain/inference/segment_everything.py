"""SAM's automatic mask generator: every object of an image, prompted by a grid of points.

The method of the SAM paper (Kirillov et al. 2023, section 7.1 and appendix B, "automatic mask
generation") and of ``segment_anything.SamAutomaticMaskGenerator`` (facebookresearch/
segment-anything, ``automatic_mask_generator.py`` and ``utils/amg.py``), with its defaults:

1. A regular grid of ``points_per_side`` x ``points_per_side`` foreground points over the image
   (cell centres) is decoded in batches of ``points_per_batch`` against the image's one
   embedding, 3 multimask outputs per point.
2. Masks whose predicted IoU is at most ``pred_iou_thresh`` (0.88) are dropped, then those whose
   *stability score* is below ``stability_score_thresh`` (0.95): the IoU between the mask
   thresholded at ``+offset`` and at ``-offset`` (1.0) on its logits at the image's size.
3. Duplicates are removed by box non-maximum suppression (IoU ``box_nms_thresh`` 0.7, scored by
   predicted IoU; ``torchvision.ops.batched_nms``).
4. With ``crop_n_layers`` > 0, the same runs again on overlapping crops (layer ``i``: a 2^i x 2^i
   tiling, overlapping by ``crop_overlap_ratio`` of the short side scaled down per layer, with
   ``points_per_side / crop_n_points_downscale_factor^i`` points per side); masks touching a
   crop's inner edge are dropped and duplicates across crops suppressed (``crop_nms_thresh``),
   preferring masks from smaller crops.
5. With ``min_mask_region_area`` > 0, holes and islands smaller than that many pixels are
   removed from each mask (8-connected components), and the NMS is run again preferring masks
   the fix left unchanged.

Masks are kept as COCO run-length encodings (``faster_coco_eval``'s pycocotools-compatible
``mask`` module) between the steps, as the reference does, so that memory stays small.

One difference from the reference's output: ``bbox`` is the COCO box ``[x, y, width, height]``
with the width and height the mask's pixel extent (``pycocotools.mask.toBbox``), where the
reference writes one pixel less (its boxes hold the last row and column, inclusive). The boxes
used for NMS and the crop-edge test are the reference's, so the same masks are kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import Tensor
from torchvision.ops import batched_nms, box_area

from vitrain.data.segmentation import resize_longest_side
from vitrain.errors import UserError
from vitrain.models.sam import SAM

__all__ = ["AutoMask", "EverythingSettings", "segment_everything", "write_everything"]

# masks whose box lies within this many pixels of a crop's inner edge are cut by the crop
CROP_EDGE_TOLERANCE = 20.0


@dataclass(frozen=True)
class EverythingSettings:
    """The generator's settings (defaults: ``SamAutomaticMaskGenerator``'s)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0

    def check(self) -> None:
        """A :class:`UserError` naming the first setting out of its range."""
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}={getattr(self, name)}: must be >= 1.")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name}={getattr(self, name)}: must be in [0, 1].")
        if self.crop_n_layers < 0 or self.min_mask_region_area < 0 or self.stability_score_offset < 0:
            raise UserError(
                f"crop_n_layers={self.crop_n_layers}, min_mask_region_area={self.min_mask_region_area}, "
                f"stability_score_offset={self.stability_score_offset}: must be >= 0."
            )
        last = self.points_per_side // self.crop_n_points_downscale_factor**self.crop_n_layers
        if last < 1:
            raise UserError(
                f"points_per_side={self.points_per_side} / crop_n_points_downscale_factor="
                f"{self.crop_n_points_downscale_factor}^crop_n_layers={self.crop_n_layers} leaves no "
                "point in the last crop layer: use fewer layers or a smaller factor."
            )


@dataclass
class AutoMask:
    """One generated mask, in the record layout of ``SamAutomaticMaskGenerator(output_mode="coco_rle")``.

    ``segmentation``: COCO compressed RLE ``{"size": [H, W], "counts": str}``; ``bbox`` and
    ``crop_box``: ``[x, y, width, height]`` pixels of the image; ``point_coords``: the prompt
    point ``[[x, y]]`` that gave the mask.
    """

    segmentation: dict
    area: int
    bbox: list[float]
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[int] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        """The mask ``(H, W)`` bool."""
        rle = {**self.segmentation, "counts": self.segmentation["counts"].encode()}
        return mask_utils.decode(rle).astype(bool)

    def to_json(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ grids, crops
def point_grid(n: int) -> np.ndarray:
    """The centres of an ``n x n`` grid of cells over the unit square: ``(n * n, 2)`` (x, y), row
    by row."""
    side = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], -1).reshape(-1, 2)


def crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """The whole image and, for each layer ``i`` in ``1..n_layers``, a ``2^i x 2^i`` tiling of
    overlapping crops: ``[(xyxy box, layer), ...]`` for an image of ``size (H, W)``."""
    h, w = size
    out = [([0, 0, w, h], 0)]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(h, w) * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + h) / per_side)
        for x0 in (int((crop_w - overlap) * i) for i in range(per_side)):
            for y0 in (int((crop_h - overlap) * j) for j in range(per_side)):
                out.append(([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)], layer))
    return out


# ------------------------------------------------------------------------------ mask measures
def stability_score(logits: Tensor, offset: float, threshold: float = 0.0) -> Tensor:
    """IoU of each mask thresholded at ``threshold + offset`` and at ``threshold - offset``
    (the first lies inside the second): ``(N, H, W)`` logits -> ``(N,)``."""
    inner = (logits > threshold + offset).flatten(1).sum(1)
    outer = (logits > threshold - offset).flatten(1).sum(1)
    return inner.float() / outer.float()


def inclusive_boxes(masks: Tensor) -> Tensor:
    """Boxes ``(N, 4)`` xyxy of ``masks (N, H, W)`` bool, ``x1, y1`` the last column and row
    (the reference's convention); an empty mask gets ``[0, 0, 0, 0]``."""
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    h, w = masks.shape[1:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    boxes = torch.stack(
        [
            torch.where(cols, ar_w, w).amin(1),
            torch.where(rows, ar_h, h).amin(1),
            torch.where(cols, ar_w, -1).amax(1),
            torch.where(rows, ar_h, -1).amax(1),
        ],
        1,
    )
    return torch.where(rows.any(1, keepdim=True), boxes, 0).float()


def near_crop_edge(boxes: Tensor, crop: list[int], image_box: list[int]) -> Tensor:
    """``(N,)`` bool: boxes (image frame) within :data:`CROP_EDGE_TOLERANCE` pixels of an edge of
    ``crop`` that is not an edge of the image (the mask was likely cut by the crop)."""
    crop_t = torch.tensor(crop, dtype=torch.float32)[None]
    image_t = torch.tensor(image_box, dtype=torch.float32)[None]
    at_crop = torch.isclose(boxes, crop_t, atol=CROP_EDGE_TOLERANCE, rtol=0)
    at_image = torch.isclose(boxes, image_t, atol=CROP_EDGE_TOLERANCE, rtol=0)
    return (at_crop & ~at_image).any(1)


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill the holes (``mode="holes"``) or delete the islands (``"islands"``) of ``mask (H, W)``
    bool smaller than ``min_area`` pixels (8-connected components; an island mask whose every
    island is small keeps its largest). Returns ``(mask, changed)``."""
    holes = mode == "holes"
    regions, count = ndimage.label(mask != holes, structure=np.ones((3, 3), dtype=int))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < min_area]
    if not small:
        return mask, False
    if holes:
        return mask | np.isin(regions, small), True
    keep = [i for i in range(1, count + 1) if i not in small] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, keep), True


def encode_rles(masks: Tensor) -> list[dict]:
    """``(N, H, W)`` bool -> COCO compressed RLEs (``counts`` as bytes)."""
    if masks.shape[0] == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode(rle).astype(bool)


# ------------------------------------------------------------------------------ candidates
@dataclass
class Candidates:
    """Masks kept so far: RLEs of the whole image and, per mask, its box (inclusive xyxy),
    predicted IoU, stability score, prompt point and crop box (xyxy)."""

    rles: list[dict]
    boxes: Tensor  # (N, 4)
    iou: Tensor  # (N,)
    stability: Tensor  # (N,)
    points: Tensor  # (N, 2)
    crops: Tensor  # (N, 4)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(
            [], torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), torch.zeros(0, 2), torch.zeros(0, 4)
        )

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, index: Tensor) -> Candidates:
        """The candidates at ``index`` (int64), in that order."""
        return Candidates(
            [self.rles[i] for i in index.tolist()],
            self.boxes[index], self.iou[index], self.stability[index], self.points[index], self.crops[index],
        )  # fmt: skip

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(
            [rle for p in parts for rle in p.rles],
            *(torch.cat([getattr(p, k) for p in parts]) for k in ("boxes", "iou", "stability", "points", "crops")),
        )  # fmt: skip

    def nms(self, scores: Tensor, threshold: float) -> Candidates:
        """Box NMS (``torchvision.ops.batched_nms``, one category), highest score first."""
        if not len(self):
            return self
        keep = batched_nms(self.boxes, scores, torch.zeros(len(self), dtype=torch.long), threshold)
        return self.select(keep)


# ------------------------------------------------------------------------------ the generator
@torch.no_grad()
def segment_everything(
    net: SAM, image: Image.Image | np.ndarray, settings: EverythingSettings | None = None
) -> list[AutoMask]:
    """Every mask SAM finds in ``image`` (PIL or ``(H, W, 3)`` uint8 RGB), best first (see the
    module docstring for the steps and ``settings``). ``net`` in eval mode, on any device."""
    settings = settings or EverythingSettings()
    settings.check()
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise UserError(
            f"segment_everything needs an (H, W, 3) uint8 RGB image, got {pixels.shape} {pixels.dtype}."
        )
    height, width = pixels.shape[:2]
    crops = crop_boxes((height, width), settings.crop_n_layers, settings.crop_overlap_ratio)
    found = Candidates.concat([crop_masks(net, pixels, crop, layer, settings) for crop, layer in crops])
    if len(crops) > 1:  # duplicates across crops: prefer the smaller crop
        found = found.nms(1 / box_area(found.crops), settings.crop_nms_thresh)
    if settings.min_mask_region_area > 0:
        found = fix_small_regions(
            found, settings.min_mask_region_area, max(settings.box_nms_thresh, settings.crop_nms_thresh)
        )
    return [to_record(found, i) for i in range(len(found))]


def crop_masks(
    net: SAM, image: np.ndarray, crop: list[int], layer: int, settings: EverythingSettings
) -> Candidates:
    """The masks of one crop ``(xyxy, crop layer)`` of ``image (H, W, 3)``: one embedding, the
    layer's point grid in batches, filtered, deduplicated; in the whole image's frame."""
    x0, y0, x1, y1 = crop
    part = Image.fromarray(image[y0:y1, x0:x1])
    crop_hw = (y1 - y0, x1 - x0)
    h, w = resize_longest_side(crop_hw, net.image_size)
    resized = part.resize((w, h), Image.BILINEAR)
    device = next(net.parameters()).device
    frame = torch.from_numpy(np.asarray(resized, dtype=np.float32).copy()).permute(2, 0, 1)[None]
    embedding = net.encode(net.preprocess(frame.to(device)))  # once per crop
    per_side = settings.points_per_side // settings.crop_n_points_downscale_factor**layer
    points = point_grid(per_side) * np.array([crop_hw[1], crop_hw[0]])  # crop pixels
    scale = np.array([w / crop_hw[1], h / crop_hw[0]])
    parts = []
    for start in range(0, len(points), settings.points_per_batch):
        batch = points[start : start + settings.points_per_batch]
        parts.append(
            point_batch_masks(net, embedding, batch, batch * scale, (h, w), crop, image.shape[:2], settings)
        )
    found = Candidates.concat(parts)
    found = found.nms(found.iou, settings.box_nms_thresh)
    offset = torch.tensor([x0, y0], dtype=torch.float32)
    found.boxes = found.boxes + offset.repeat(2)
    found.points = found.points + offset
    return found


def point_batch_masks(
    net: SAM,
    embedding: Tensor,
    points: np.ndarray,
    frame_points: np.ndarray,
    input_size: tuple[int, int],
    crop: list[int],
    image_size: tuple[int, int],
    settings: EverythingSettings,
) -> Candidates:
    """The masks of one batch of ``B`` points (crop pixels ``points``, resized-frame pixels
    ``frame_points``, both ``(B, 2)``): 3 per point, filtered by predicted IoU, stability and
    the crop edge; boxes in the crop's frame, RLEs in the whole image's."""
    device = embedding.device
    coords = torch.as_tensor(frame_points, dtype=torch.float32, device=device)[:, None]
    labels = torch.ones(coords.shape[0], 1, dtype=torch.long, device=device)
    logits, iou = net.decode(embedding, (coords, labels), multimask_output=True)  # (B, 3, h, w), (B, 3)
    logits, iou = logits.flatten(0, 1), iou.flatten(0, 1).float().cpu()
    prompts = torch.as_tensor(points, dtype=torch.float32).repeat_interleave(3, 0)
    keep = (
        iou > settings.pred_iou_thresh
        if settings.pred_iou_thresh > 0
        else torch.ones_like(iou, dtype=torch.bool)
    )
    x0, y0, x1, y1 = crop
    full = net.postprocess_masks(logits[keep.to(device)][:, None], input_size, (y1 - y0, x1 - x0))[:, 0]
    stability = stability_score(full.float(), settings.stability_score_offset).cpu()
    stable = (
        stability >= settings.stability_score_thresh
        if settings.stability_score_thresh > 0
        else torch.ones_like(stability, dtype=torch.bool)
    )
    masks = (full > 0).cpu()[stable]
    iou, prompts, stability = iou[keep][stable], prompts[keep][stable], stability[stable]
    boxes = inclusive_boxes(masks)
    inside = ~near_crop_edge(
        boxes + torch.tensor([x0, y0, x0, y0]), crop, [0, 0, image_size[1], image_size[0]]
    )
    masks, boxes = masks[inside], boxes[inside]
    whole = torch.zeros(masks.shape[0], *image_size, dtype=torch.bool)
    whole[:, y0:y1, x0:x1] = masks
    crops = torch.tensor([crop], dtype=torch.float32).expand(masks.shape[0], 4)
    return Candidates(encode_rles(whole), boxes, iou[inside], stability[inside], prompts[inside], crops)


def fix_small_regions(found: Candidates, min_area: int, nms_thresh: float) -> Candidates:
    """Fill small holes and delete small islands of every mask, then NMS again, preferring the
    masks the fix left unchanged (score 1 vs 0); the kept changed masks get their new RLE and box."""
    if not len(found):
        return found
    masks, unchanged = [], []
    for rle in found.rles:
        mask, filled = remove_small_regions(decode_rle(rle), min_area, "holes")
        mask, cut = remove_small_regions(mask, min_area, "islands")
        masks.append(torch.from_numpy(mask))
        unchanged.append(not (filled or cut))
    stacked = torch.stack(masks)
    boxes = inclusive_boxes(stacked)
    scores = torch.tensor(unchanged, dtype=torch.float32)
    keep = batched_nms(boxes, scores, torch.zeros(len(found), dtype=torch.long), nms_thresh)
    for i in keep.tolist():
        if not unchanged[i]:
            found.rles[i] = encode_rles(stacked[i : i + 1])[0]
            found.boxes[i] = boxes[i]
    return found.select(keep)


def to_record(found: Candidates, i: int) -> AutoMask:
    rle = found.rles[i]
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    cx0, cy0, cx1, cy1 = (int(v) for v in found.crops[i].tolist())
    return AutoMask(
        segmentation={"size": list(rle["size"]), "counts": rle["counts"].decode()},
        area=int(mask_utils.area(rle)),
        bbox=[x, y, w, h],
        predicted_iou=float(found.iou[i]),
        stability_score=float(found.stability[i]),
        point_coords=[[float(v) for v in found.points[i].tolist()]],
        crop_box=[cx0, cy0, cx1 - cx0, cy1 - cy0],
    )


# ------------------------------------------------------------------------------ files
def overlay(image: Image.Image, masks: list[AutoMask], alpha: float = 0.5) -> Image.Image:
    """``image`` with each mask painted in its own colour (largest first, so small masks stay
    visible) and its prompt point marked."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    rng = np.random.default_rng(0)
    for record in sorted(masks, key=lambda m: -m.area):
        colour = rng.uniform(40, 255, 3)
        mask = record.mask
        base[mask] = (1 - alpha) * base[mask] + alpha * colour
    out = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    r = max(1, round(max(out.size) / 200))
    for record in masks:
        x, y = record.point_coords[0]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0))
    return out


def write_everything(
    masks: list[AutoMask], image: Image.Image, out: Path, stem: str, settings: EverythingSettings
) -> list[Path]:
    """Write ``<stem>_everything_<i>.png`` (white = mask, one per mask, best first),
    ``<stem>_everything.json`` (the records, COCO RLE, and the settings) and
    ``<stem>_everything_overlay.png``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, record in enumerate(masks):
        path = out / f"{stem}_everything_{i:03d}.png"
        Image.fromarray(record.mask.astype(np.uint8) * 255).save(path)
        paths.append(path)
    summary = {
        "image": {"height": image.height, "width": image.width},
        "settings": asdict(settings),
        "masks": [m.to_json() for m in masks],
    }
    json_path = out / f"{stem}_everything.json"
    json_path.write_text(json.dumps(summary, indent=1))
    overlay_path = out / f"{stem}_everything_overlay.png"
    overlay(image, masks).save(overlay_path)
    return [*paths, json_path, overlay_path]
