"""Building a SAM variant and reading its weights (the network itself is ``vitrain.models.sam``).

:func:`create_sam` (the ``model.net`` factory, like segment-anything's ``build_sam.py``) builds a
variant of ``SAM_VARIANTS`` and starts it from one source of weights:

* an official SAM checkpoint (``sam_vit_b_01ec64.pth``) or a vitrain one: the reference's key
  layout, loaded strictly (:func:`load_sam_checkpoint`);
* a Hugging Face ``SamModel`` weight file (``facebook/sam-vit-base``'s ``model.safetensors``):
  renamed to the reference layout (:func:`convert_hf_state_dict`), then loaded strictly;
* an MAE pretraining checkpoint whose encoder initialises the image encoder, the paper's start
  (:func:`load_mae_encoder`).

Every check of a file against the network goes through ``vitrain.checkpoints.check_fit``: a
misfit is one message naming the file, the variant it holds and the configured one.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from vitrain.checkpoints import load_fitting, read_weights
from vitrain.errors import UserError
from vitrain.hub import rename_first
from vitrain.models.registry import variant_args
from vitrain.models.sam import SAM, SAM_VARIANTS, SamConfig
from vitrain.models.sizes import check_image_size, patch_stages
from vitrain.models.vit import describe_encoder

log = logging.getLogger(__name__)

__all__ = [
    "create_sam",
    "convert_hf_state_dict",
    "load_sam_checkpoint",
    "load_hf_weights",
    "load_mae_encoder",
    "load_sam_state",
    "variant_of_state",
]

_ARCH_KEYS = tuple(SamConfig.__dataclass_fields__)


def create_sam(
    name: str,
    image_size: int | None = None,
    checkpoint: str | None = None,
    hf_weights: str | None = None,
    init_from: str | None = None,
    require_init_from: bool = False,
    **overrides,
) -> SAM:
    """Build the SAM variant ``name`` (see ``vitrain.models.sam`` for the table).

    Args:
        name: ``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h`` or ``sam_tiny``.
        image_size: input side (long side of the resized images); None: the variant's.
        checkpoint: an official SAM checkpoint (``sam_vit_b_01ec64.pth``), loaded strictly.
        hf_weights: a Hugging Face ``SamModel`` weight file (``model.safetensors``), converted.
        init_from: an MAE pretraining checkpoint (vitrain ``.ckpt`` or the reference ``.pth``)
            whose encoder initialises the image encoder (see :func:`load_mae_encoder`).
        require_init_from: fail unless some weights are given (``init_from``, ``checkpoint`` or
            ``hf_weights``): the paper's recipe starts from an MAE encoder, never from scratch.
        **overrides: any :class:`~vitrain.models.sam.SamConfig` field (``drop_path``,
            ``window_size``, ...).
    """
    given = [
        k for k, v in (("checkpoint", checkpoint), ("hf_weights", hf_weights), ("init_from", init_from)) if v
    ]
    if require_init_from and not given:
        raise UserError(
            f"model.net.init_from is required by this recipe ({name} starts from an MAE-pretrained encoder, "
            "as the SAM paper): set model.net.init_from=<MAE pretraining .ckpt or .pth>, or "
            "model.net.checkpoint=<a SAM checkpoint>."
        )
    if len(given) > 1:
        raise UserError(f"model.net: {' and '.join(given)} are both set; give only one source of weights.")
    arch = variant_args("SAM", name, SAM_VARIANTS, _ARCH_KEYS, overrides)
    if image_size is not None:
        arch["image_size"] = image_size
    arch["encoder_global_attn_indexes"] = tuple(arch["encoder_global_attn_indexes"])
    for key in ("pixel_mean", "pixel_std"):
        if key in arch:
            arch[key] = tuple(arch[key])
    cfg = SamConfig(**arch)
    check_image_size(
        cfg.image_size, patch_stages(cfg.patch_size), f"the patch size {cfg.patch_size} of {name}"
    )
    if cfg.encoder_embed_dim % cfg.encoder_num_heads or cfg.prompt_embed_dim % (2 * cfg.decoder_num_heads):
        raise UserError(f"model.net: widths of {name} must be divisible by their head counts.")
    net = SAM(cfg)
    net.variant = name
    if checkpoint:
        load_sam_checkpoint(net, checkpoint)
    if hf_weights:
        load_hf_weights(net, hf_weights)
    if init_from:
        load_mae_encoder(net, init_from)
    return net


# ------------------------------------------------------------------ the reference layout
def variant_of_state(state: dict[str, Tensor]) -> tuple[str | None, int, int] | None:
    """``(variant name or None, encoder width, encoder depth)`` of a SAM state dict in the
    reference layout, from its shapes; None when it is not one (no image encoder)."""
    proj = state.get("image_encoder.patch_embed.proj.weight")
    if proj is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    width = proj.shape[0]
    name = next(
        (
            n
            for n, a in SAM_VARIANTS.items()
            if a["encoder_embed_dim"] == width and a["encoder_depth"] == depth
        ),
        None,
    )
    return name, width, depth


def describe_state(state: dict[str, Tensor]) -> str:
    """The variant a SAM state dict belongs to (by its encoder width and depth), in words."""
    found = variant_of_state(state)
    if found is None:
        return "not a SAM network (no image_encoder.patch_embed.proj.weight)"
    name, width, depth = found
    if name is not None:
        return f"{name} (encoder width {width}, depth {depth})"
    return f"a SAM with encoder width {width}, depth {depth}"


def load_sam_state(net: SAM, state: dict[str, Tensor], path: str | Path, key: str) -> None:
    """Load ``state`` (the reference layout) into ``net``, every key and shape equal; a misfit
    names the variant of the file and the configured one."""
    variant = getattr(net, "variant", "the configured network")
    load_fitting(
        net,
        state,
        source=f"{key}={str(path)!r}",
        holds=describe_state(state),
        network=f"model.net.name={variant} ({describe_state(net.state_dict())}) at image_size={net.image_size}",
        fix="Set model.net.name and model.net.image_size to those of the file.",
    )


def load_sam_checkpoint(net: SAM, path: str | Path, key: str = "model.net.checkpoint") -> None:
    """Load an official SAM checkpoint (``sam_vit_b_01ec64.pth``, read with ``weights_only``)
    or a vitrain SAM checkpoint strictly into ``net``."""
    load_sam_state(net, read_weights(path, key), path, key)
    log.info("Loaded the SAM weights of %s (%s)", path, key)


# ------------------------------------------------------------------ Hugging Face SamModel
# Hugging Face ``SamModel`` names -> the reference's (first match wins)
_HF_RENAMES = [
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"^vision_encoder\.", "image_encoder."),
    (
        r"^shared_image_embedding\.positional_embedding$",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^(mask_decoder\.transformer\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
]
_HF_MLP = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|layers\.(\d+)|proj_out)\."
)


def convert_hf_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face ``SamModel`` state dict in the reference layout (``image_encoder.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``).

    The prompt encoder's copy of the tied Fourier matrix is dropped (the model-level one is
    kept); the feed-forward heads' ``proj_in`` / ``layers.i`` / ``proj_out`` become ``layers.0``
    / ``layers.{i+1}`` / ``layers.{last}``. Unknown names pass through unchanged (and then fail
    the strict load, naming them).
    """
    hf_state = {k.removeprefix("sam."): v for k, v in hf_state.items()}
    mlp_depth: dict[str, int] = {}
    for name in hf_state:
        m = _HF_MLP.match(name)
        if m and m.group(3) is not None:
            mlp_depth[m.group(1)] = max(mlp_depth.get(m.group(1), 0), int(m.group(3)) + 1)
    out = {}
    for name, tensor in hf_state.items():
        if name == "prompt_encoder.shared_embedding.positional_embedding":
            continue
        m = _HF_MLP.match(name)
        if m:
            prefix, part = m.group(1), m.group(2)
            last = mlp_depth.get(prefix, 0) + 1
            index = 0 if part == "proj_in" else last if part == "proj_out" else int(m.group(3)) + 1
            out[f"{prefix}.layers.{index}.{name[m.end() :]}"] = tensor
            continue
        out[rename_first(name, _HF_RENAMES) or name] = tensor
    return out


def load_hf_weights(net: SAM, path: str | Path, key: str = "model.net.hf_weights") -> None:
    """Load a Hugging Face ``SamModel`` weight file (``facebook/sam-vit-base``'s
    ``model.safetensors``) into ``net`` through :func:`convert_hf_state_dict`, strictly."""
    load_sam_state(net, convert_hf_state_dict(read_weights(path, key)), path, key)
    log.info("Loaded the Hugging Face SAM weights of %s (%s)", path, key)


# ------------------------------------------------------------------ an MAE encoder
def load_mae_encoder(net: SAM, path: str | Path, key: str = "model.net.init_from") -> list[str]:
    """Initialise ``net``'s image encoder from an MAE pretraining checkpoint (the paper's start).

    The MAE encoder (timm layout: ``patch_embed``, ``pos_embed`` with a class position,
    ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``) maps onto the image
    encoder; its absolute position table drops the class position and is interpolated
    (bicubic) to the SAM grid; the MAE decoder, mask and class tokens and final norm are
    dropped. The relative-position tables, the neck, the prompt encoder and the mask decoder
    keep their fresh initialisation. Returns the names of the image-encoder tensors left fresh.
    """
    state = read_weights(path, key)
    encoder = net.image_encoder
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise UserError(
            f"{key}={str(path)!r} is not an MAE / ViT checkpoint (no patch_embed.proj.weight, pos_embed)."
        )
    mapped: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if not name.startswith(("patch_embed.", "blocks.")):
            continue
        mapped[name.replace(".mlp.fc1.", ".mlp.lin1.").replace(".mlp.fc2.", ".mlp.lin2.")] = tensor
    pos = state["pos_embed"]  # (1, [1 +] g*g, D)
    grid = encoder.pos_embed.shape[1]
    tokens = pos.shape[1]
    side = math.isqrt(tokens)
    if side * side != tokens:
        pos, side = pos[:, 1:], math.isqrt(tokens - 1)
    if pos.shape[-1] != encoder.pos_embed.shape[-1]:
        raise UserError(
            f"{key}={str(path)!r}: its encoder is {pos.shape[-1]} wide but the SAM image encoder is "
            f"{encoder.pos_embed.shape[-1]}: pick an MAE of the same width, depth and patch size."
        )
    pos = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    if side != grid:
        pos = F.interpolate(pos, size=(grid, grid), mode="bicubic", align_corners=False)
    mapped["pos_embed"] = pos.permute(0, 2, 3, 1).to(encoder.pos_embed.dtype)
    fit = load_fitting(
        encoder,
        mapped,
        source=f"{key}={str(path)!r}",
        holds=describe_encoder(state),
        network=f"the image encoder of model.net.name={getattr(net, 'variant', 'SAM')} "
        f"({describe_encoder(encoder.state_dict())})",
        fix="The MAE must have the image encoder's width, depth and patch size.",
        may_miss=("neck", "*.rel_pos_h", "*.rel_pos_w"),
    )
    log.info("Initialised the SAM image encoder from %s (%s); fresh: neck, relative positions", path, key)
    return fit.missing
