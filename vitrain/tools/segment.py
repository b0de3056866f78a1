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
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vitrain.data.base import open_image
from vitrain.errors import UserError
from vitrain.inference.sam import load_network, segment
from vitrain.inference.segment_everything import EverythingSettings, segment_everything, write_everything


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
    """``--everything`` (SAM's automatic mask generator, ``vitrain.inference.segment_everything``) and its settings."""
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


def parse_numbers(text: str, count: tuple[int, ...], flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise UserError(f"{flag} {text}: expected {' or '.join(map(str, count))} comma-separated numbers.")
    return values
