"""The one place where a network factory checks its variant name and architecture overrides.

Every family keeps its table of named variants (``GPT_VARIANTS``, ``MAE_VARIANTS`` ...) next to
its network; :func:`variant_args` resolves ``name`` + overrides against that table with the
same checks and messages for all of them (``create_mae``, ``create_t2t_vit``, ``create_detr``,
``create_gpt``, ``create_bert``, ``create_sam``). ``MODEL_FAMILIES`` lists every factory a ``conf/model/*.yaml``
``net._target_`` may name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vitrain.errors import UserError


def variant_args(
    family: str,
    name: str,
    variants: Mapping[str, Mapping[str, Any]],
    allowed: Iterable[str],
    overrides: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{**defaults, **variants[name], **overrides}`` after checking that ``name`` is a variant
    of ``family`` and every override key is in ``allowed``; a :class:`UserError` naming the
    offending ``model.net`` key and the valid choices otherwise."""
    if name not in variants:
        raise UserError(
            f"model.net.name={name!r} is not a {family} variant. Valid names: {', '.join(variants)}."
        )
    allowed = list(allowed)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise UserError(
            f"model.net: unknown {family} argument(s) {', '.join(unknown)}. Architecture arguments: "
            f"{', '.join(allowed)}."
        )
    return {**(defaults or {}), **variants[name], **overrides}


# family -> the factory a conf/model/*.yaml names as model.net._target_
MODEL_FAMILIES = {
    "vit": "vitrain.models.create_vit",
    "timm": "vitrain.models.create_timm",
    "t2t_vit": "vitrain.models.create_t2t_vit",
    "mae": "vitrain.models.create_mae",
    "detr": "vitrain.models.create_detr",
    "gpt": "vitrain.models.create_gpt",
    "bert": "vitrain.models.create_bert",
    "sam": "vitrain.models.create_sam",
    "bert_classifier": "vitrain.models.create_bert_classifier",
    "gpt_classifier": "vitrain.models.create_gpt_classifier",
    "bert_tagger": "vitrain.models.create_bert_tagger",
    "gpt_sft": "vitrain.models.create_gpt_sft",
}
