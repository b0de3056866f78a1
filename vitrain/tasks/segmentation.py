"""Promptable segmentation (SAM, Kirillov et al. 2023): interactive-prompt training, mIoU metrics.

Training simulates an interactive annotation session per object (paper section 3 and appendix
A, "Training algorithm"): the first prompt is a foreground point or a noisy box (equal odds;
each box coordinate moved by Gaussian noise of std 10% of the box side, at most 20 px); each
later round adds one point sampled uniformly from the error region of the previous prediction
(foreground where it missed the object, background where it spilled over) and feeds the previous
round's low-resolution mask logits back as the mask prompt. Of the ``num_rounds`` (11) rounds,
``mask_only_rounds`` (2) add no point: one at a random place among the point rounds, one last.
A single-point prompt is ambiguous: the decoder's 3 multimask outputs are used and only the
lowest-loss one is trained; otherwise the single-mask output (token 0). The mask passed on to
the next round is, for multimask rounds, the one with the highest predicted IoU.

Loss per object and round: ``focal_weight * focal + dice_weight * dice + iou_weight * MSE(IoU
prediction, actual IoU of the predicted mask)`` (20 : 1 : 1 in the paper), in float32 (autocast
off), averaged over objects and rounds. Masks are compared at the decoder's low resolution (4x
the embedding grid); targets are area-downsampled to it.

Validation prompts are fixed (no randomness), so numbers compare across epochs and runs:
``val/miou_point``: one foreground point at the object's centre (the mask pixel farthest from its
boundary), multimask output, the most confident mask; ``val/miou_box``: the exact box (single
mask; monitored); ``val/miou_click1`` .. ``val/miou_click{val_clicks}``: interactive evaluation,
each new click at the centre of the largest error region of the previous mask, with the
previous logits fed back. IoUs are computed at the input frame's resolution inside the image
(padding excluded) and averaged over objects.

Image-embedding cache (``embedding_cache``; :mod:`vitrain.tasks.embedding_cache`): when every
parameter of the image encoder is frozen and the encoder is deterministic (no active dropout or
drop path), each image's embedding is computed once, stored, and read back in later epochs: the
validation and test images always, the training images unless the data augments them
(``data.hflip``: one message names the setting). Cached or not, all objects of an image are
decoded against its one embedding in a step. A frozen encoder that is not cached runs without
gradients.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn
from torchmetrics import MeanMetric

from vitrain.data.segmentation import image_key
from vitrain.errors import UserError
from vitrain.tasks import optim
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory, Task
from vitrain.tasks.embedding_cache import EmbeddingCache, encoder_key, stochastic_modules

log = logging.getLogger(__name__)

Targets = list[dict[str, Tensor]]


class SegmentationTask(Task):
    """Train a SAM ``net`` (``vitrain.models.create_sam``) on batches ``(images, targets)`` of
    ``vitrain.data.segmentation``.

    Args:
        net: the SAM network.
        optimizer: partial optimizer, called with the parameter groups (no weight decay on
            biases, norms and position tables).
        scheduler: partial schedule, called with the optimizer, the total optimizer steps and
            the steps per epoch; stepped every step.
        num_rounds: prompting rounds per object and step (paper: 11 = 1 initial prompt + 8
            point rounds + 2 mask-only rounds).
        mask_only_rounds: rounds without a new point (paper: 2; one random, one last).
        focal_weight, dice_weight, iou_weight: loss weights (paper: 20, 1, 1).
        box_noise: std of the box noise as a fraction of the box side (paper: 0.1).
        box_noise_max: cap of the box noise in pixels of the input frame (paper: 20).
        layer_decay: layer-wise lr decay over the image encoder's blocks (paper: 0.8); the
            prompt encoder, mask decoder and neck train at the full rate. None: one rate.
        val_clicks: clicks of the interactive validation (``val/miou_click1..N``).
        embedding_cache: cache the image embeddings when the image encoder is frozen and
            deterministic (see the module docstring); False: always run the encoder.
        embedding_cache_dir: the cache's folder (None: ``<run dir>/embedding_cache``); a shared
            folder serves every run with the same encoder weights and images.
        embedding_cache_memory_mb: embeddings also kept in memory up to this size (MiB).
    """

    data_kind = "segmentation"
    monitor = "val/miou_box"
    monitor_mode = "max"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_rounds: int = 11,
        mask_only_rounds: int = 2,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        box_noise: float = 0.1,
        box_noise_max: float = 20.0,
        layer_decay: float | None = None,
        val_clicks: int = 5,
        embedding_cache: bool = True,
        embedding_cache_dir: str | None = None,
        embedding_cache_memory_mb: float = 1024,
    ) -> None:
        if num_rounds < 1:
            raise UserError(f"model.num_rounds={num_rounds}: must be >= 1 (the paper: 11).")
        if not 0 <= mask_only_rounds < num_rounds:
            raise UserError(
                f"model.mask_only_rounds={mask_only_rounds}: must be in [0, model.num_rounds={num_rounds}) "
                "(the paper: 2 of 11)."
            )
        if val_clicks < 1:
            raise UserError(f"model.val_clicks={val_clicks}: must be >= 1.")
        super().__init__(net, optimizer, scheduler, layer_decay)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_rounds, self.mask_only_rounds = num_rounds, mask_only_rounds
        self.weights = (focal_weight, dice_weight, iou_weight)
        self.box_noise, self.box_noise_max = box_noise, box_noise_max
        self.val_clicks = val_clicks
        self.val_point = MeanMetric()
        self.val_box = MeanMetric()
        self.val_click = nn.ModuleList(MeanMetric() for _ in range(val_clicks))
        self.cache_settings = (embedding_cache, embedding_cache_dir, embedding_cache_memory_mb)
        self.cache: EmbeddingCache | None = None
        # whether the cache serves the validation / test images, and the training images
        self.cache_eval = self.cache_train = False
        self.encoder_frozen = False  # every image-encoder parameter frozen (decided in setup)

    # --------------------------------------------------------------------- embedding cache
    def setup(self, stage: str) -> None:
        """Decide whether image embeddings are cached (saying why not, once) and, if they are, ask
        the data for image keys before its loaders are built. The cache opens when a loop starts."""
        encoder = self.net.image_encoder
        self.encoder_frozen = not any(p.requires_grad for p in encoder.parameters())
        self.cache_eval = self.cache_train = False
        wanted, _, _ = self.cache_settings
        if not wanted:
            return
        if not self.encoder_frozen:
            if stage == "fit":
                log.info(
                    "Embedding cache: off (the image encoder trains; model.freeze: [image_encoder] freezes it)."
                )
            return
        noisy = stochastic_modules(encoder)
        if noisy:
            log.warning(
                "Embedding cache: off, the frozen image encoder is random in training mode (%s): set "
                "model.frozen_eval=true or model.net.drop_path=0 to cache its embeddings.",
                ", ".join(noisy[:3]),
            )
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        augmentations = getattr(datamodule, "image_augmentations", list)()
        self.cache_eval, self.cache_train = True, not augmentations
        if augmentations and stage == "fit":
            log.warning(
                "Embedding cache: the training images are not cached, %s changes them every epoch (set it "
                "off to cache them); the validation and test images are.",
                " and ".join(augmentations),
            )
        if hasattr(datamodule, "provide_image_keys"):
            datamodule.provide_image_keys()

    def open_cache(self) -> None:
        """Point the cache at the encoder's current weights (their key is computed here, once per
        loop: the weights of a resumed or tested checkpoint are loaded by then)."""
        if not self.cache_eval:
            self.cache = None
            return
        _, folder, memory_mb = self.cache_settings
        root = Path(folder) if folder else Path(self.trainer.default_root_dir) / "embedding_cache"
        key = encoder_key(self.net.image_encoder, str(self.trainer.precision))
        if self.cache is None or self.cache.dir != root / key:
            log.info("Embedding cache: %s", root / key)
            self.cache = EmbeddingCache(root, key, int(memory_mb * 2**20))

    def on_fit_start(self) -> None:
        self.open_cache()

    def on_validation_start(self) -> None:
        if self.trainer.state.fn != "fit":  # mode=eval: no fit loop opened it
            self.open_cache()

    def on_test_start(self) -> None:
        self.open_cache()

    def encode_images(self, images: Tensor, targets: Targets, training: bool) -> Tensor:
        """Image embeddings ``(B, C, h, w)``: from the cache when it serves these images, else
        from the encoder (without gradients when it is frozen)."""
        if self.cache is not None and (self.cache_train or not training):
            keys = [
                t["image_key"] if "image_key" in t else image_key(img)
                for t, img in zip(targets, images, strict=True)
            ]
            return self.cache.embeddings(self.net.encode, images, keys)
        if self.encoder_frozen:  # no graph through a frozen encoder
            with torch.no_grad():
                return self.net.encode(images)
        return self.net.encode(images)

    # ------------------------------------------------------------------------------ training
    def round_plan(self) -> list[bool]:
        """For each round after the first: whether it adds a point (False: mask-only). One
        mask-only round is last, the others at random places among the point rounds."""
        later = self.num_rounds - 1
        if self.mask_only_rounds == 0:
            return [True] * later
        plan = [True] * (later - self.mask_only_rounds)
        for _ in range(self.mask_only_rounds - 1):
            plan.insert(random.randint(0, len(plan)), False)
        return plan + [False]

    def training_step(self, batch: tuple[Tensor, Targets], batch_idx: int) -> Tensor:
        images, targets = batch
        embeddings = self.encode_images(images, targets, training=True)
        objects = gather_objects(targets, embeddings.device)
        if objects is None:  # no object in the whole batch: a zero loss keeps every rank in step
            return sum((p.sum() * 0.0 for p in self.parameters() if p.requires_grad), embeddings.sum() * 0.0)
        masks, boxes, image_index = objects
        low = self.net.low_res_size
        gt = downsample_masks(masks, low)  # (N, low, low) bool
        scale = images.shape[-1] / low
        n = gt.shape[0]
        use_box = torch.rand(n, device=gt.device) < 0.5
        noisy = noisy_boxes(boxes, self.box_noise, self.box_noise_max, images.shape[-1])
        coords = torch.zeros(n, 0, 2, device=gt.device)
        labels = torch.zeros(n, 0, dtype=torch.long, device=gt.device)
        first = sample_points(masks)  # frame pixels; box-prompted objects ignore it
        emb = embeddings[image_index]
        prev: Tensor | None = None
        total, parts = 0.0, {"focal": 0.0, "dice": 0.0, "iou": 0.0}
        plan = [True, *self.round_plan()]
        for r, adds_point in enumerate(plan):
            if r == 0:
                coords = torch.cat([coords, first[:, None]], 1)
                labels = torch.cat([labels, torch.ones(n, 1, dtype=torch.long, device=gt.device)], 1)
            elif adds_point:
                new, positive = error_points(prev > 0, gt)  # low-res cells
                coords = torch.cat([coords, ((new.float() + 0.5) * scale - 0.5)[:, None]], 1)
                labels = torch.cat([labels, positive.long()[:, None]], 1)
            logits, iou_pred, chosen = self.decode_round(
                emb, coords, labels, noisy, use_box, prev, multimask=r == 0
            )
            loss, round_parts = self.round_loss(logits, iou_pred, gt)
            total = total + loss
            for key, value in round_parts.items():
                parts[key] += value
            prev = chosen.detach()
        total = total / len(plan)
        self.log("train/loss", total, prog_bar=True, batch_size=images.shape[0])
        for key, value in parts.items():
            self.log(f"train/loss_{key}", value / len(plan), batch_size=images.shape[0])
        self.log("train/objects", float(n), batch_size=images.shape[0])
        return total

    def decode_round(
        self,
        emb: Tensor,
        coords: Tensor,
        labels: Tensor,
        boxes: Tensor,
        use_box: Tensor,
        prev: Tensor | None,
        multimask: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder pass over ``N`` objects, the box-prompted and the point-only ones in two
        groups (the reference pads point-only prompts with one padding point, box prompts not).
        Column 0 of ``coords`` is the first point of the point-prompted objects; box-prompted
        objects skip it (their points are the later clicks only).

        Returns ``(logits (N, M, h, w), iou (N, M), chosen (N, 1, h, w))``: ``M`` is 3 when
        ``multimask`` (point-only objects with their single point; box objects always get the
        single-mask output, padded to 3 by repetition so the rows stack) else 1; ``chosen`` the
        most confident mask, fed back next round.
        """
        n = emb.shape[0]
        m = 3 if multimask else 1
        low = self.net.low_res_size
        logits = emb.new_zeros(n, m, low, low)
        iou = emb.new_zeros(n, m)
        for group, with_box in ((~use_box, False), (use_box, True)):
            if not group.any():
                continue
            mask_in = prev[group] if prev is not None else None
            start = 1 if with_box else 0
            g_logits, g_iou = self.net.decode(
                emb[group],
                points=(coords[group, start:], labels[group, start:]) if coords.shape[1] > start else None,
                boxes=boxes[group] if with_box else None,
                mask_inputs=mask_in,
                multimask_output=multimask and not with_box,
            )
            logits[group] = g_logits.expand(-1, m, -1, -1).to(logits.dtype)
            iou[group] = g_iou.expand(-1, m).to(iou.dtype)
        best = iou.argmax(1)
        chosen = logits[torch.arange(n, device=logits.device), best][:, None]
        return logits, iou, chosen

    def round_loss(self, logits: Tensor, iou_pred: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one round: per object the lowest-loss of its ``M`` masks (focal + dice) plus
        the IoU head's MSE on every mask; float32, autocast off."""
        focal_w, dice_w, iou_w = self.weights
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, iou_pred = logits.float(), iou_pred.float()
            target = gt[:, None].float().expand_as(logits)
            focal = sigmoid_focal_loss(logits, target)  # (N, M)
            dice = dice_loss(logits, target)  # (N, M)
            mask_loss = focal_w * focal + dice_w * dice
            best = mask_loss.argmin(1)
            rows = torch.arange(logits.shape[0], device=logits.device)
            actual = mask_iou(logits.detach() > 0, target > 0.5)  # (N, M)
            iou_loss = F.mse_loss(iou_pred, actual, reduction="none").mean(1)
            loss = (mask_loss[rows, best] + iou_w * iou_loss).mean()
        # detached tensors, not floats: no host sync per round (the logger reads them once a step)
        parts = {
            "focal": focal[rows, best].mean().detach(),
            "dice": dice[rows, best].mean().detach(),
            "iou": iou_loss.mean().detach(),
        }
        return loss, parts

    # ---------------------------------------------------------------------------- validation
    def validation_step(self, batch: tuple[Tensor, Targets], batch_idx: int) -> None:
        images, targets = batch
        embeddings = self.encode_images(images, targets, training=False)
        objects = gather_objects(targets, embeddings.device)
        if objects is None:
            return
        masks, boxes, image_index = objects
        valid = valid_regions(targets, images.shape[-1], embeddings.device)[image_index]  # (N, S, S)
        emb = embeddings[image_index]
        n = masks.shape[0]
        # exact box, single mask
        logits, _ = self.net.decode(emb, boxes=boxes)
        self.val_box.update(self.frame_iou(logits[:, 0], masks, valid))
        # interactive clicks from the centre point
        center = centre_points(masks)
        coords, labels = center[:, None].float(), torch.ones(n, 1, dtype=torch.long, device=masks.device)
        prev = None
        for click in range(self.val_clicks):
            out, iou = self.net.decode(
                emb, points=(coords, labels), mask_inputs=prev, multimask_output=click == 0
            )
            best = out[torch.arange(n, device=out.device), iou.argmax(1)]  # (N, h, w)
            pred_full = self.upsample(best) > 0
            ious = mask_iou(pred_full & valid, masks)
            if click == 0:
                self.val_point.update(ious)
            self.val_click[click].update(ious)
            if click + 1 < self.val_clicks:
                new, positive = centre_error_points(pred_full & valid, masks)
                coords = torch.cat([coords, new[:, None].float()], 1)
                labels = torch.cat([labels, positive.long()[:, None]], 1)
                prev = best[:, None]

    def on_validation_epoch_end(self) -> None:
        self.log("val/miou_box", self.val_box.compute(), prog_bar=True)
        self.log("val/miou_point", self.val_point.compute(), prog_bar=True)
        for i, metric in enumerate(self.val_click):
            self.log(f"val/miou_click{i + 1}", metric.compute())
            metric.reset()
        self.val_box.reset()
        self.val_point.reset()

    def upsample(self, logits: Tensor) -> Tensor:
        """Low-res ``(N, h, w)`` logits -> the input frame ``(N, S, S)`` (bilinear)."""
        size = self.net.image_size
        if logits.shape[-1] == size:
            return logits
        return F.interpolate(logits[:, None].float(), (size, size), mode="bilinear", align_corners=False)[
            :, 0
        ]

    def frame_iou(self, logits: Tensor, masks: Tensor, valid: Tensor) -> Tensor:
        return mask_iou((self.upsample(logits) > 0) & valid, masks)

    @torch.no_grad()
    def predict_prompts(self, images: Tensor, targets: Targets) -> dict[str, Tensor]:
        """For pictures: each object's centre point and box prompt and the masks they give, at
        the frame's resolution. Returns ``image_index (N,)``, ``points (N, 2)``, ``boxes (N, 4)``,
        ``point_masks``, ``box_masks`` and ``true_masks``, all ``(N, S, S)`` bool."""
        embeddings = self.net.encode(images)
        objects = gather_objects(targets, embeddings.device)
        if objects is None:
            raise UserError("no object to prompt in these images.")
        masks, boxes, image_index = objects
        emb = embeddings[image_index]
        n = masks.shape[0]
        center = centre_points(masks)
        out, iou = self.net.decode(
            emb, points=(center[:, None].float(), torch.ones(n, 1, dtype=torch.long, device=masks.device)),
            multimask_output=True,
        )  # fmt: skip
        point_logits = out[torch.arange(n, device=out.device), iou.argmax(1)]
        box_logits, _ = self.net.decode(emb, boxes=boxes)
        return {
            "image_index": image_index,
            "points": center,
            "boxes": boxes,
            "point_masks": self.upsample(point_logits) > 0,
            "box_masks": self.upsample(box_logits[:, 0]) > 0,
            "true_masks": masks,
        }

    # ----------------------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """``vitrain.tasks.optim.param_groups`` with the layers of :func:`sam_layers`."""
        return optim.param_groups(self.net, self.layer_decay, layers=sam_layers(self.net))


# ------------------------------------------------------------------------------- helpers
def sam_layers(net: nn.Module) -> optim.LayerMap:
    """SAM's layers for layer decay (``optim.param_groups``): the patch and position embedding
    of the image encoder are layer 0 (``lr * layer_decay ** (depth + 1)``), encoder block ``i``
    is layer ``i + 1``, and the neck, the prompt encoder and the mask decoder are layer
    ``depth + 1`` (the full rate)."""
    depth = len(net.image_encoder.blocks)

    def layer_of(name: str) -> int:
        parts = name.split(".")
        if parts[0] != "image_encoder":
            return depth + 1
        if parts[1] in ("patch_embed", "pos_embed"):
            return 0
        return int(parts[2]) + 1 if parts[1] == "blocks" else depth + 1

    return layer_of, depth


def gather_objects(targets: Targets, device: torch.device) -> tuple[Tensor, Tensor, Tensor] | None:
    """All objects of a batch: ``(masks (N, S, S) bool, boxes (N, 4), image_index (N,))``, or
    None when no image has one."""
    masks = [t["masks"] for t in targets]
    if sum(m.shape[0] for m in masks) == 0:
        return None
    index = torch.cat([torch.full((m.shape[0],), i, dtype=torch.long) for i, m in enumerate(masks)])
    boxes = torch.cat([t["boxes"] for t in targets])
    return torch.cat(masks).to(device), boxes.to(device).float(), index.to(device)


def valid_regions(targets: Targets, size: int, device: torch.device) -> Tensor:
    """``(B, S, S)`` bool: True inside each resized image, False on the padding."""
    valid = torch.zeros(len(targets), size, size, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        h, w = (int(v) for v in t["input_size"])
        valid[i, :h, :w] = True
    return valid


def downsample_masks(masks: Tensor, size: int) -> Tensor:
    """``(N, S, S)`` bool -> ``(N, size, size)`` bool (area average >= 0.5)."""
    if masks.shape[-1] == size:
        return masks
    return F.interpolate(masks[:, None].float(), (size, size), mode="area")[:, 0] >= 0.5


def noisy_boxes(boxes: Tensor, noise: float, noise_max: float, size: int) -> Tensor:
    """Each coordinate moved by N(0, (noise * side)^2) noise clipped to ``noise_max`` pixels,
    then clamped to the frame; ``(N, 4)`` xyxy."""
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
    jitter = (torch.randn_like(boxes) * noise * side).clamp(-noise_max, noise_max)
    out = (boxes + jitter).clamp(0, size - 1)
    x0, x1 = torch.minimum(out[:, 0], out[:, 2]), torch.maximum(out[:, 0], out[:, 2])
    y0, y1 = torch.minimum(out[:, 1], out[:, 3]), torch.maximum(out[:, 1], out[:, 3])
    return torch.stack([x0, y0, x1, y1], 1)


def sample_points(region: Tensor) -> Tensor:
    """One pixel drawn uniformly from each non-empty ``region (N, H, W)``: ``(N, 2)`` (x, y)."""
    n, h, w = region.shape
    flat = region.reshape(n, -1).float()
    empty = flat.sum(1) == 0
    flat[empty] = 1.0  # an empty region: anywhere (callers avoid this)
    index = torch.multinomial(flat, 1)[:, 0]
    return torch.stack([index % w, index // w], 1).float()


def error_points(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """A point drawn uniformly from the error region of each prediction: ``(points (N, 2) (x, y)
    cells, positive (N,) bool)``; positive (foreground) where it falls on a missed part of the
    object, negative (background) on a false-positive part. A perfect prediction gets a
    foreground point on the object."""
    pred = pred.reshape(gt.shape)
    error = pred ^ gt
    empty = ~error.flatten(1).any(1)
    region = torch.where(empty[:, None, None], gt, error)
    points = sample_points(region)
    x, y = points[:, 0].long(), points[:, 1].long()
    positive = gt[torch.arange(gt.shape[0], device=gt.device), y, x]
    return points, positive


def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of boolean masks ``(..., H, W)`` -> ``(...)`` (1 when both are empty)."""
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017) averaged over pixels: ``(N, M, H, W)`` -> ``(N, M)``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft dice loss of sigmoid probabilities: ``(N, M, H, W)`` -> ``(N, M)``."""
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + eps) / (prob.sum(-1) + target.sum(-1) + eps)


def centre_points(masks: Tensor) -> Tensor:
    """The pixel of each mask farthest from its boundary (distance transform, zero-padded so
    the frame's edge counts as boundary): ``(N, 2)`` (x, y); the evaluation's first click."""
    out = []
    for mask in masks.cpu().numpy():
        out.append(_farthest_inside(mask))
    return torch.tensor(np.array(out), dtype=torch.float32, device=masks.device).reshape(-1, 2)


def _farthest_inside(region: np.ndarray) -> tuple[int, int]:
    if not region.any():
        return (0, 0)
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def centre_error_points(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """The next evaluation click: the centre of the largest error (the error pixel farthest
    from the error region's boundary); positive when it lies on the object. ``(N, 2)``, ``(N,)``."""
    error = (pred ^ gt).cpu().numpy()
    gt_np = gt.cpu().numpy()
    points, positive = [], []
    for err, obj in zip(error, gt_np, strict=True):
        x, y = _farthest_inside(err) if err.any() else _farthest_inside(obj)
        points.append((x, y))
        positive.append(bool(obj[y, x]))
    device = gt.device
    return torch.tensor(points, dtype=torch.float32, device=device), torch.tensor(positive, device=device)
