"""SAM's automatic mask generator (``vitrain.inference.segment_everything``, ``python -m vitrain.segment
--everything``) against ``segment_anything.SamAutomaticMaskGenerator``.

Tiny networks with random weights give masks that cover the whole image (nothing for the
filters and the NMS to choose between), so the comparison swaps both networks' prompt
decoding for one analytic decoder: disks around each prompt point, whose radius, logit slope,
predicted IoU and an image term (the real image embedding of both encoders, same weights) vary
with the point. Both generators then see equal networks, and every step (the grid, resizing,
crops, the IoU and stability filters, NMS, the crop-edge test, RLE) is compared.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vitrain.data.shapes import render
from vitrain.inference.segment_everything import (
    EverythingSettings,
    crop_boxes,
    point_grid,
    remove_small_regions,
    segment_everything,
    stability_score,
)
from vitrain.models.sam_weights import create_sam
from vitrain.tools import segment

# a SAM small enough for tests (as tests/models/test_sam.py): 32 px, patch 8, 4x4 grid
TINY = dict(
    image_size=32, patch_size=8, window_size=3, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8, decoder_num_heads=2,
    decoder_mlp_dim=64, iou_head_hidden_dim=32,
)  # fmt: skip


def disk_decoder(
    embedding: torch.Tensor, coords: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic mask decoding: ``embedding (1, C, g, g)``, points ``(B, 1, 2)`` of the ``size``
    frame -> 3 disks of growing radius around each point ``(B, 3, 4g, 4g)`` logits and their
    "predicted IoU" ``(B, 3)``, both varying with the point; the image adds a term."""
    low = embedding.shape[-1] * 4
    cell = size / low
    centres = (torch.arange(low, dtype=torch.float32) + 0.5) * cell
    p = coords[:, 0].float()  # (B, 2)
    dx = centres.view(1, 1, low) - p[:, 0].view(-1, 1, 1)
    dy = centres.view(1, low, 1) - p[:, 1].view(-1, 1, 1)
    dist = (dx**2 + dy**2).sqrt()  # (B, low, low)
    wobble = 1 + 0.4 * torch.sin(0.37 * p[:, 0] + 0.23 * p[:, 1])  # (B,)
    radius = size * torch.tensor([0.1, 0.2, 0.35])[None] * wobble[:, None]  # (B, 3)
    slope = (6 + 3 * torch.cos(0.5 * p[:, 0] - 0.3 * p[:, 1]))[:, None, None, None] / cell
    image = F.interpolate(
        embedding[:, :1].float(), size=(low, low), mode="nearest"
    ).tanh()  # (1, 1, low, low)
    logits = slope * (radius[..., None, None] - dist[:, None]) + image
    k = torch.arange(3, dtype=torch.float32)[None]
    iou = 0.5 + 0.5 * torch.sin(1.3 * p[:, :1] + 0.7 * p[:, 1:] + 2 * k)
    return logits, iou


class CoordsPromptEncoder(nn.Module):
    """Passes the point coordinates through (to :class:`DiskMaskDecoder`)."""

    def forward(self, points, boxes, masks):
        return points[0], None

    def get_dense_pe(self):
        return None


class DiskMaskDecoder(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(
        self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output
    ):
        return disk_decoder(image_embeddings, sparse_prompt_embeddings, self.size)


def reference_and_ours():
    """The reference generator's network and vitrain's, equal image encoders (random weights),
    both decoding prompts with :func:`disk_decoder`."""
    sa = pytest.importorskip("segment_anything")
    from segment_anything.modeling import ImageEncoderViT, Sam

    torch.manual_seed(0)
    encoder = ImageEncoderViT(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=[1], window_size=3, out_chans=32,
    )  # fmt: skip
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    ref = Sam(
        image_encoder=encoder, prompt_encoder=CoordsPromptEncoder(), mask_decoder=DiskMaskDecoder(32)
    ).eval()
    net = create_sam("sam_tiny", **TINY).eval()
    net.image_encoder.load_state_dict(encoder.state_dict())
    net.decode = lambda emb, points, boxes=None, mask_inputs=None, multimask_output=False: disk_decoder(
        emb, points[0], 32
    )
    return sa.SamAutomaticMaskGenerator, ref, net


def shapes_image() -> np.ndarray:
    """A 48 x 64 shapes picture (not square: resizing and padding matter)."""
    return np.asarray(render(0, 0, 3, 64, (2, 3), (12, 30))[0])[:48]


@pytest.mark.parametrize(
    "settings",
    [
        dict(points_per_side=12, pred_iou_thresh=0.6, stability_score_thresh=0.85),
        dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.8, crop_n_layers=1,
             crop_n_points_downscale_factor=2, box_nms_thresh=0.5),
    ],
    ids=["whole-image", "crops"],
)  # fmt: skip
def test_same_masks_kept_as_the_reference_generator(settings):
    generator, ref, net = reference_and_ours()
    image = shapes_image()
    expected = generator(ref, **settings).generate(image)
    ours = segment_everything(net, image, EverythingSettings(**settings))
    assert 5 <= len(expected) == len(ours)
    for e, o in zip(expected, ours, strict=True):
        mask = o.mask
        assert (mask ^ e["segmentation"]).sum() <= 2  # a pixel may flip where a logit is ~0
        assert abs(o.area - e["area"]) <= 2
        assert o.predicted_iou == pytest.approx(e["predicted_iou"], abs=1e-5)
        assert o.stability_score == pytest.approx(e["stability_score"], abs=2e-3)
        assert o.point_coords[0] == pytest.approx(e["point_coords"][0], abs=1e-4)
        assert o.crop_box == e["crop_box"]
        # COCO boxes: the pixel extent, one more than the reference's inclusive width
        assert o.bbox == pytest.approx([*e["bbox"][:2], e["bbox"][2] + 1, e["bbox"][3] + 1], abs=1)
    if settings.get("crop_n_layers"):
        assert len({tuple(o.crop_box) for o in ours}) > 1  # masks from the crops survived


def test_grid_crops_and_stability_score():
    grid = point_grid(4)
    assert grid.shape == (16, 2) and grid[0].tolist() == [0.125, 0.125] and grid[1].tolist() == [0.375, 0.125]
    boxes = crop_boxes((48, 64), 1, 512 / 1500)
    assert boxes[0] == ([0, 0, 64, 48], 0) and len(boxes) == 5 and all(layer == 1 for _, layer in boxes[1:])
    assert max(b[2] for b, _ in boxes) == 64 and max(b[3] for b, _ in boxes) == 48
    logits = torch.tensor([[[3.0, 0.5, -0.5, -3.0]]])  # > 1: 1 pixel, > -1: 3 pixels
    assert stability_score(logits, 1.0).item() == pytest.approx(1 / 3)


def test_small_holes_filled_and_small_islands_removed():
    mask = np.zeros((12, 12), bool)
    mask[1:9, 1:9] = True
    mask[4, 4] = False  # a 1-pixel hole
    mask[11, 11] = True  # a 1-pixel island
    filled, changed = remove_small_regions(mask, 3, "holes")
    assert changed and filled[4, 4] and filled[11, 11]
    cut, changed = remove_small_regions(filled, 3, "islands")
    assert changed and not cut[11, 11] and cut[1:9, 1:9].all()
    same, changed = remove_small_regions(cut, 3, "islands")
    assert not changed and np.array_equal(same, cut)
    tiny = np.zeros((5, 5), bool)
    tiny[0, 0] = tiny[3:5, 3:5] = True  # every island small: the largest stays
    kept, _ = remove_small_regions(tiny, 10, "islands")
    assert kept[3:5, 3:5].all() and not kept[0, 0]


def test_min_region_area_removes_the_islands_of_generated_masks():
    _, _, net = reference_and_ours()
    base = dict(points_per_side=12, pred_iou_thresh=0.6, stability_score_thresh=0.85)
    plain = segment_everything(net, shapes_image(), EverythingSettings(**base))
    fixed = segment_everything(net, shapes_image(), EverythingSettings(**base, min_mask_region_area=40))
    assert fixed and len(fixed) <= len(plain)
    for record in fixed:
        mask = record.mask
        assert remove_small_regions(mask, 40, "islands")[1] is False
        assert record.area == int(mask.sum())


def test_everything_cli_writes_masks_json_and_overlay(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "sam_tiny.pth"
    torch.save(create_sam("sam_tiny").state_dict(), weights)  # 64 px, recognised from the shapes
    image = tmp_path / "photo.png"
    Image.fromarray(shapes_image()).save(image)
    out = tmp_path / "out"
    args = [str(weights), str(image), "--everything", "--points-per-side", "4", "--pred-iou-thresh", "0",
            "--stability-thresh", "0", "--out", str(out)]  # fmt: skip
    assert segment.main(args) == 0
    summary = json.loads((out / "photo_everything.json").read_text())
    masks = summary["masks"]
    assert summary["settings"]["points_per_side"] == 4 and summary["image"] == {"height": 48, "width": 64}
    assert masks and set(masks[0]) >= {
        "segmentation",
        "area",
        "bbox",
        "predicted_iou",
        "stability_score",
        "point_coords",
    }
    pngs = sorted(out.glob("photo_everything_[0-9]*.png"))
    assert len(pngs) == len(masks)
    assert np.asarray(Image.open(pngs[0])).shape == (48, 64)
    assert Image.open(out / "photo_everything_overlay.png").size == (64, 48)
    assert f"{len(masks)} masks" in capsys.readouterr().out
    # prompts and --everything exclude each other; a bad setting is one message
    assert segment.main([str(weights), str(image), "--everything", "--point", "3,3"]) == 1
    assert "--everything" in capsys.readouterr().err
    assert (
        segment.main([str(weights), str(image), "--everything", "--points-per-side", "2", "--out", str(out)])
        == 0
    )
    assert "0 masks" in (printed := capsys.readouterr().out) and "lower --pred-iou-thresh" in printed
    assert segment.main([str(weights), str(image), "--everything", "--pred-iou-thresh", "2"]) == 1
    assert "pred_iou_thresh=2.0: must be in [0, 1]" in capsys.readouterr().err


def test_everything_on_weights_without_a_sam_network(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(shapes_image()).save(image)
    other = tmp_path / "vit.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4)}, other)
    assert segment.main([str(other), str(image), "--everything"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not SAM weights" in err and "Traceback" not in err
    ckpt = tmp_path / "vit.ckpt"  # a vitrain checkpoint of a classifier
    torch.save(
        {"state_dict": {"net.head.weight": torch.zeros(2, 4)}, "vitrain": {"net": {"name": "vit_ti16"}}}, ckpt
    )
    assert segment.main([str(ckpt), str(image), "--everything"]) == 1
    assert "not a checkpoint of a SAM model (its network is 'vit_ti16')" in capsys.readouterr().err
