"""SAM's masks for point and box prompts on one image (``python -m vitrain.segment`` is the
command line; ``vitrain.inference.segment_everything`` finds every object).

:func:`load_network` reads a vitrain checkpoint (``.ckpt``), a ``mode=export`` folder (or its
``model.safetensors``), an official SAM checkpoint (``sam_vit_b_01ec64.pth``) or Hugging Face
``SamModel`` weights (``model.safetensors``); the variant of the last two is read from the
weights' shapes. :func:`segment` computes the image embedding once and decodes every object's
prompts against it: all prompts form one object (as ``SamPredictor.predict``) unless ``each``,
and one prompt of a single point gives the 3 multimask outputs. Coordinates are pixels of the
image as given (x right, y down).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitrain.checkpoints import load_checkpoint, net_state_dict, read_weights
from vitrain.data.segmentation import resize_longest_side
from vitrain.errors import UserError
from vitrain.models.sam import SAM, SAM_VARIANTS
from vitrain.models.sam_weights import convert_hf_state_dict, create_sam, load_sam_state, variant_of_state

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
