"""Vision Transformers from timm, plus loading of local pretrained weight files.

The four recipe sizes (patch 16) map to timm's registry names:

=========  ===========================  ======  =====  =====  ======
vitrain    timm name                    width   depth  heads  params (224 px, 1000 classes)
=========  ===========================  ======  =====  =====  ======
vit_ti16   vit_tiny_patch16_224         192     12     3      5.7M
vit_s16    vit_small_patch16_224        384     12     6      22.1M
vit_b16    vit_base_patch16_224         768     12     12     86.6M
vit_l16    vit_large_patch16_224        1024    24     16     304.3M
=========  ===========================  ======  =====  =====  ======
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.layers import trunc_normal_
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from vitrain.checkpoints import load_fitting, read_weights, shorten_keys
from vitrain.errors import UserError
from vitrain.hub import create_timm_model
from vitrain.models.sizes import check_image_size, patch_stages

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What happened when a weight file was loaded into a network."""

    path: str
    new_keys: list[str]  # in the network, not in the file (freshly initialised)
    dropped_keys: list[str]  # in the file, not used (e.g. a head with another class count)


def create_vit(
    name: str,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    init_from: str | None = None,
    require_init_from: bool = False,
    head_init_std: float | None = None,
    **kwargs,
) -> VisionTransformer:
    """Build timm's ViT ``name``; optionally start from released or local weights.

    Args:
        name: a timm VisionTransformer name, e.g. ``vit_base_patch16_224``, or a name with a
            pretrained tag, e.g. ``vit_base_patch16_224.augreg2_in21k_ft_in1k``.
        pretrained: load timm's released weights for ``name`` (its default tag when none is
            given) through timm's hub loading and the Hugging Face cache: position embeddings
            resized to ``img_size``, patch embedding adapted to ``in_chans``, a new head when
            ``num_classes`` differs (see :func:`vitrain.hub.create_timm_model`).
        pretrained_file: a timm ``.pth`` / ``.bin`` / ``.safetensors`` state dict (or a vitrain
            ``.ckpt`` of this network), loaded by timm's own loader as released weights are:
            ``pos_embed`` resized to this network's image size, the patch embedding adapted to
            ``in_chans``, the head kept only when the class count is the file's.
        init_from: an encoder to start from, typically an MAE pretraining run: a vitrain
            Lightning ``.ckpt`` (its ``net.*`` weights), the ``model.safetensors`` of
            ``mode=export`` or a facebookresearch/mae ``.pth``. See :func:`load_encoder`.
        require_init_from: fail unless ``init_from`` is given (set by the fine-tuning and
            linear-probing recipes).
        head_init_std: re-initialise the classifier head after loading: weight from a truncated
            normal of this std, bias 0 (MAE fine-tuning: 2e-5, facebookresearch/mae
            ``main_finetune.py``); 0 sets weight and bias to zeros (ViT transfer:
            google-research/vision_transformer ``models_vit.py`` initialises the head kernel and
            bias with zeros, and ``checkpoint.py`` ``load_pretrained`` keeps that fresh head).
            None keeps timm's initialisation (std 0.02).
        img_size: side of the input images, pixels.
        in_chans: channels of the input images.
        num_classes: outputs of the classifier head (0: no head).
        drop_path_rate: stochastic depth of the last block; timm raises it linearly from 0 at
            the first block.
        **kwargs: passed to ``timm.create_model`` (img_size, num_classes, in_chans,
            drop_path_rate, global_pool, ... and any architecture override).

    With ``init_from`` the network's ``pretrained_cfg`` (what timm's
    ``resolve_model_data_config`` and so ``data=imagenet`` read) is set to the input statistics
    of vitrain's MAE pretraining: ImageNet mean/std, bicubic, eval crop 0.875 (resize 256 /
    crop 224), as facebookresearch/mae ``main_finetune.py`` / ``main_linprobe.py``, instead of the
    timm tag's own (0.5/0.5, crop 0.9 for ``vit_base_patch16_224``).

    Input ``(B, in_chans, img_size, img_size)`` -> logits ``(B, num_classes)``.
    """
    if head_init_std is not None and not head_init_std >= 0:
        raise UserError(
            f"model.net.head_init_std={head_init_std}: must be >= 0 (0: a zero head), or null for timm's init."
        )
    if require_init_from and not init_from:
        raise UserError(
            "model.net.init_from is required for this recipe: set model.net.init_from=<the MAE "
            "pretraining checkpoint (.ckpt) or its exported model.safetensors>."
        )
    given = [
        k
        for k, v in (
            ("pretrained", pretrained),
            ("pretrained_file", pretrained_file),
            ("init_from", init_from),
        )
        if v
    ]
    if len(given) > 1:
        raise UserError(
            f"model.net.{' and model.net.'.join(given)} are all set: give only one (pretrained=true for "
            "timm's released weights, pretrained_file for a timm weight file, init_from for a vitrain checkpoint)."
        )
    check_vit_image_size(name, kwargs)
    net = create_timm_model(name, pretrained=bool(pretrained), pretrained_file=pretrained_file, **kwargs)
    if not isinstance(net, VisionTransformer):
        raise UserError(f"model.net.name={name!r} is not a timm VisionTransformer.")
    if init_from:
        load_encoder(net, init_from)
        net.pretrained_cfg = {**net.pretrained_cfg, **MAE_DATA_CONFIG}
    if head_init_std is not None:
        if not isinstance(net.head, torch.nn.Linear):
            raise UserError("model.net.head_init_std is set but the network has no head (num_classes=0).")
        if head_init_std > 0:
            trunc_normal_(net.head.weight, std=head_init_std)
        else:
            torch.nn.init.zeros_(net.head.weight)
        torch.nn.init.zeros_(net.head.bias)
    return net


def check_vit_image_size(name: str, kwargs: dict) -> None:
    """Refuse an ``img_size`` that the patch size of timm's ``name`` (or ``patch_size=``) does not
    divide, before the network is built."""
    if "img_size" not in kwargs:
        return
    patch = kwargs.get("patch_size")
    if patch is None:
        found = re.search(r"patch(\d+)", name)
        if found is None:
            return
        patch = int(found.group(1))
    check_image_size(kwargs["img_size"], patch_stages(patch), f"the patch size {patch} of {name}")


# The input pipeline an encoder pretrained by vitrain's MAE recipe (data=imagenet with the MAE
# network, which has no timm data config) saw: ImageNet statistics, bicubic, crop 0.875.
MAE_DATA_CONFIG = {
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}


def adapt_patch_embedding(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A patch-embedding weight ``(D, C, p, p)`` for ``in_chans`` input channels, the same function
    on images whose channels are equal. timm's ``adapt_input_conv`` takes the weight as RGB; a
    grey (1-channel) weight is repeated instead, scaled by ``1 / in_chans``."""
    if weight.shape[1] == 1:
        return weight.repeat(1, in_chans, 1, 1) / in_chans
    return adapt_input_conv(in_chans, weight)


# Keys of an MAE checkpoint that belong to the pretraining decoder, not to the encoder.
MAE_DECODER_PREFIXES = ("decoder_", "mask_token")


def describe_encoder(state: dict[str, torch.Tensor]) -> str:
    """A ViT encoder's state dict (timm layout: ``patch_embed.proj``, ``blocks.<i>``) in words, for
    messages: ``an encoder 768 wide, 12 blocks deep, patch 16``."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None:
        return "no ViT encoder (no patch_embed.proj.weight)"
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return f"an encoder {proj.shape[0]} wide, {depth} blocks deep, patch {proj.shape[-1]}"


def load_encoder(net: VisionTransformer, path: str | Path, key: str = "model.net.init_from") -> LoadReport:
    """Load a pretrained encoder (``init_from``: an MAE run's checkpoint or export, or a timm
    weight file) into the classifier ``net``, adapting it to ``net``.

    timm's own loader (used for ``pretrained_file``) cannot do this, because an encoder differs
    from the classifier in more than the head: the network is built before the weights are
    known, the file has extra tensors and lacks some that the classifier adds. This function:

    * drops an MAE decoder (``decoder_*``, ``mask_token``); MAE's fixed sin-cos ``pos_embed`` has
      timm's layout (class position first) and loads as a learnable one;
    * interpolates position embeddings to ``net``'s patch grid (timm's ``checkpoint_filter_fn``;
      the class-token position is kept apart) and adapts the patch embedding to ``net``'s input
      channels (timm's ``adapt_input_conv``);
    * drops a classifier head whose shape differs (left freshly initialised);
    * drops the final ``norm`` when ``net`` pools by average (timm then has ``fc_norm`` after
      the pooling and ``norm`` is an identity), as facebookresearch/mae ``models_vit.py``.

    Only ``head.*`` and ``fc_norm.*`` may be missing from the file; any other mismatch is a
    :class:`UserError` naming ``key`` (``vitrain.checkpoints.check_fit``). The new and the
    dropped keys are logged and returned.
    """
    state = read_weights(path, key)
    decoder = [k for k in state if k.startswith(MAE_DECODER_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(MAE_DECODER_PREFIXES)}
    state = checkpoint_filter_fn(state, net)
    own = net.state_dict()
    conv = "patch_embed.proj.weight"
    if conv in state and conv in own and state[conv].shape[1] != own[conv].shape[1]:
        state[conv] = adapt_patch_embedding(state[conv], own[conv].shape[1])
    replaced_norm = isinstance(net.norm, torch.nn.Identity)
    fit = load_fitting(
        net,
        state,
        source=f"{key}={str(path)!r}",
        holds=describe_encoder(state),
        network=f"the configured network ({describe_encoder(own)})",
        fix="Check model.net.name and its size overrides (depth, embed_dim, patch_size).",
        may_miss=("head*", "fc_norm*"),
        may_add=("head", "fc_norm", *(("norm",) if replaced_norm else ())),
        may_resize=("head*",),
    )
    report = LoadReport(str(path), fit.fresh, sorted(fit.dropped + decoder))
    others = [k for k in report.dropped_keys if k not in decoder]
    dropped_text = ([f"the MAE decoder ({len(decoder)} tensors)"] if decoder else []) + others
    log.info(
        "Loaded %s (%s); new: %s; dropped: %s",
        path,
        key,
        report.new_keys or "none",
        shorten_keys(dropped_text) if dropped_text else "none",
    )
    return report


def prepare_linear_probe(net: torch.nn.Module) -> torch.nn.Module:
    """Give ``net`` the head of a linear probe (MAE, He et al. 2021): in place, returns ``net``.

    The head becomes ``Sequential(BatchNorm1d(embed_dim, affine=False, eps=1e-6), head)`` with
    the linear layer re-initialised (truncated normal, std 0.01; zero bias); the batch norm has
    no parameters, only running statistics. The task freezes everything else
    (``ClassificationTask(linear_probe=True)``: ``Task.freeze(['*', '!head'])``).
    """
    head = getattr(net, "head", None)
    if not isinstance(head, torch.nn.Linear):
        raise UserError(
            "model.linear_probe=true needs a network with a linear classifier head "
            f"(net.head is {type(head).__name__}); check model.net.num_classes > 0."
        )
    trunc_normal_(head.weight, std=0.01)
    torch.nn.init.zeros_(head.bias)
    net.head = torch.nn.Sequential(torch.nn.BatchNorm1d(head.in_features, affine=False, eps=1e-6), head)
    return net


def count_parameters(net: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts of ``net``."""
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return total, trainable
