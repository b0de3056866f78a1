"""Segment objects in one image from point and box prompts with a SAM network.

    python -m vitrain.segment WEIGHTS IMAGE --point X,Y [--point X,Y,0 ...] [--box X0,Y0,X1,Y1]
        [--each] [--multimask] [--out DIR]

``WEIGHTS``: a vitrain checkpoint (``.ckpt``), a ``mode=export`` folder (or its
``model.safetensors``), an official SAM checkpoint (``sam_vit_b_01ec64.pth``) or Hugging Face
``SamModel`` weights (``model.safetensors``); the variant of the last two is read from the
weights' shapes. Coordinates are pixels of IMAGE as given (x right, y down); a point's third
number is its label (1 foreground, the default; 0 background).

All prompts form one object (as ``SamPredictor.predict``) unless ``--each``: then every point and
every box is an object of its own. The image embedding is computed once and shared by all
objects. One prompt of a single point gives the 3 multimask outputs (``--multimask`` forces them
for any prompt). Writes ``<out>/<image>_obj<i>_mask<j>.png`` (white = object, at the image's size)
and prints each mask's predicted IoU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitrain.checkpoints import load_checkpoint, net_state_dict, read_weights
from vitrain.data.base import open_image
from vitrain.data.segmentation import resize_longest_side
from vitrain.errors import UserError
from vitrain.models.sam import SAM, SAM_VARIANTS
from vitrain.models.sam_weights import convert_hf_state_dict, create_sam, load_sam_state, variant_of_state
from vitrain.segment_everything import EverythingSettings, segment_everything, write_everything

log = logging.getLogger("vitrain.segment")


def variant_of(state: dict[str, torch.Tensor], path: Path) -> tuple[str, int]:
    """``(variant name, image size)`` of a SAM state dict, from its shapes."""
    found = variant_of_state(state)
    if found is None:
        raise UserError(f"{path}: not SAM weights (no image_encoder.patch_embed.proj.weight).")
    name, width, depth = found
    if name is None:
        raise UserError(
            f"{path}: SAM weights of encoder width {width} and depth {depth} match no variant "
            f"({', '.join(SAM_VARIANTS)}): export them from vitrain (mode=export) to keep their config."
        )
    grid = state["image_encoder.pos_embed"].shape[1]
    return name, grid * SAM_VARIANTS[name]["patch_size"]


def load_network(path: str | Path) -> SAM:
    """A SAM network with the weights of ``path`` (see the module docstring), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".ckpt":
        checkpoint = load_checkpoint(path, key="WEIGHTS")
        config = dict(checkpoint.get("vitrain", {}).get("net", {}))
        if not config.get("name", "").startswith("sam"):
            raise UserError(
                f"{path}: not a checkpoint of a SAM model (its network is {config.get('name')!r})."
            )
        state = net_state_dict(checkpoint)
    elif (
        (path.parent / "config.json").is_file() and path.suffix == ".safetensors" and _is_vitrain_export(path)
    ):
        meta = json.loads((path.parent / "config.json").read_text())
        config = {"name": meta["name"], **meta.get("kwargs", {})}
        state = read_weights(path, "WEIGHTS")
    else:
        state = read_weights(path, "WEIGHTS")
        if not any(k.startswith("image_encoder.") for k in state):
            state = convert_hf_state_dict(state)
        name, size = variant_of(state, path)
        config = {"name": name, "image_size": size}
    for key in ("_target_", "checkpoint", "hf_weights", "init_from"):
        config.pop(key, None)
    net = create_sam(**config)
    load_sam_state(net, state, path, "WEIGHTS")
    log.info("Loaded %s (%s at %d px)", path, config["name"], net.image_size)
    return net.eval()


def _is_vitrain_export(path: Path) -> bool:
    try:
        return "vitrain" in str(json.loads((path.parent / "config.json").read_text()).get("target", ""))
    except (OSError, ValueError):
        return False


def parse_numbers(text: str, count: tuple[int, ...], flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise UserError(f"{flag} {text}: expected {' or '.join(map(str, count))} comma-separated numbers.")
    return values


@torch.no_grad()
def segment(
    net: SAM,
    image: Image.Image,
    points: list[tuple[float, float, int]],
    boxes: list[tuple[float, float, float, float]],
    each: bool = False,
    multimask: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Masks at the image's size for each object: ``[(masks (M, H, W) bool, iou (M,)), ...]``."""
    width, height = image.size
    for x, y, _ in points:
        if not (0 <= x < width and 0 <= y < height):
            raise UserError(f"--point {x:g},{y:g} lies outside the image ({width} x {height} pixels).")
    for box in boxes:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise UserError(
                f"--box {','.join(f'{v:g}' for v in box)}: needs 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}."
            )
    if not points and not boxes:
        raise UserError("give at least one --point X,Y or --box X0,Y0,X1,Y1.")
    if len(boxes) > 1 and not each:
        raise UserError("several --box prompts make several objects: add --each.")
    h, w = resize_longest_side((height, width), net.image_size)
    pixels = torch.from_numpy(np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32).copy())
    frame = net.preprocess(pixels.permute(2, 0, 1)[None])
    embedding = net.encode(frame)  # once, shared by every object
    sx, sy = w / width, h / height

    def scaled_points(items):
        coords = torch.tensor([[[x * sx, y * sy] for x, y, _ in items]])
        labels = torch.tensor([[label for _, _, label in items]])
        return coords, labels

    objects = []
    if each:
        objects += [(scaled_points([p]), None) for p in points]
        objects += [(None, torch.tensor([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]])) for b in boxes]
    else:
        box = torch.tensor([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes]) if boxes else None
        objects.append((scaled_points(points) if points else None, box))
    results = []
    for prompt_points, prompt_box in objects:
        single_point = prompt_box is None and prompt_points is not None and prompt_points[0].shape[1] == 1
        logits, iou = net.decode(
            embedding, prompt_points, prompt_box, multimask_output=multimask or single_point
        )
        full = net.postprocess_masks(logits, (h, w), (height, width))[0] > 0
        results.append((full.numpy(), iou[0].numpy()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitrain.segment",
        description=__doc__.split("\n\n")[0],
        epilog="All prompts form one object unless --each. A prompt of a single point writes its 3 "
        "multimask outputs (_mask0.._mask2) even without --multimask; other prompts write one mask "
        "unless --multimask.",
    )
    parser.add_argument("weights", help=".ckpt, export folder, official .pth or Hugging Face .safetensors")
    parser.add_argument("image")
    parser.add_argument(
        "--point", action="append", default=[], help="X,Y[,LABEL] (1 foreground, 0 background)"
    )
    parser.add_argument("--box", action="append", default=[], help="X0,Y0,X1,Y1")
    parser.add_argument("--each", action="store_true", help="every point and box is an object of its own")
    parser.add_argument(
        "--multimask",
        action="store_true",
        help="the 3 multimask outputs for every object (a single point always gives 3)",
    )
    parser.add_argument("--out", default=".", help="folder of the mask PNGs (default: here)")
    add_everything_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.everything:
        return main_everything(args)
    try:
        points = []
        for text in args.point:
            values = parse_numbers(text, (2, 3), "--point")
            label = int(values[2]) if len(values) == 3 else 1
            if label not in (0, 1):
                raise UserError(f"--point {text}: the label must be 1 (foreground) or 0 (background).")
            points.append((values[0], values[1], label))
        boxes = [tuple(parse_numbers(text, (4,), "--box")) for text in args.box]
        net = load_network(args.weights)
        image_path = Path(args.image)
        if not image_path.is_file():
            raise UserError(f"IMAGE {image_path}: no such file.")
        image = open_image(image_path)
        results = segment(net, image, points, boxes, each=args.each, multimask=args.multimask)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, (masks, ious) in enumerate(results):
        for j, (mask, iou) in enumerate(zip(masks, ious, strict=True)):
            path = out / f"{image_path.stem}_obj{i}_mask{j}.png"
            Image.fromarray((mask * 255).astype(np.uint8)).save(path)
            print(f"{path}\tpredicted IoU {float(iou):.4f}\tarea {int(mask.sum())} px")
    return 0


def add_everything_arguments(parser: argparse.ArgumentParser) -> None:
    """``--everything`` (SAM's automatic mask generator, ``vitrain.segment_everything``) and its settings."""
    group = parser.add_argument_group("--everything: every object, from a grid of point prompts")
    group.add_argument("--everything", action="store_true", help="segment every object (no prompts)")
    defaults = EverythingSettings()
    for flag, name, kind in (
        ("--points-per-side", "points_per_side", int),
        ("--points-per-batch", "points_per_batch", int),
        ("--pred-iou-thresh", "pred_iou_thresh", float),
        ("--stability-thresh", "stability_score_thresh", float),
        ("--box-nms-thresh", "box_nms_thresh", float),
        ("--crop-layers", "crop_n_layers", int),
        ("--min-region-area", "min_mask_region_area", int),
    ):
        group.add_argument(flag, dest=name, type=kind, default=getattr(defaults, name),
                           help=f"default {getattr(defaults, name):g}")  # fmt: skip


def main_everything(args: argparse.Namespace) -> int:
    """``--everything``: one PNG per mask, a JSON of COCO RLEs and an overlay in ``--out``."""
    try:
        if args.point or args.box:
            raise UserError("--everything prompts a grid of points itself: drop --point and --box.")
        settings = EverythingSettings(
            **{
                name: getattr(args, name)
                for name in EverythingSettings.__dataclass_fields__
                if hasattr(args, name)
            }
        )
        settings.check()
        net = load_network(args.weights)
        image_path = Path(args.image)
        if not image_path.is_file():
            raise UserError(f"IMAGE {image_path}: no such file.")
        image = open_image(image_path)
        masks = segment_everything(net, image, settings)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = write_everything(masks, image, Path(args.out), image_path.stem, settings)
    print(f"{len(masks)} masks: {paths[-2]} (COCO RLE), {paths[-1]} (overlay)")
    if not masks:
        print(
            f"No mask passed the filters (predicted IoU > {settings.pred_iou_thresh:g}, stability >= "
            f"{settings.stability_score_thresh:g}; SAM's defaults, set for its released models): lower "
            "--pred-iou-thresh and --stability-thresh for a small or briefly trained model."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
