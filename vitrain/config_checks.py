"""Checks of a composed config that need no data and no network: values a run would otherwise
trip over late (a traceback at the first step) or silently (a run that trains nothing).

Each check raises :class:`vitrain.errors.UserError` naming the key, its value and the fix;
``vitrain.run.check_config`` calls them before anything is built.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator

from omegaconf import DictConfig

from vitrain.data.base import check_loader_settings
from vitrain.errors import Range, UserError, is_number, require_in

RATE = Range(0, 1)  # a fraction dropped: 1 would drop everything
PROBABILITY = Range(0, 1, high_closed=True)
MASKED = Range(0, 1, low_closed=False)  # a fraction masked: 0 leaves nothing to predict
NON_NEGATIVE = Range(0, float("inf"))

# the leaf names of rates and probabilities under ``model`` and ``data`` (timm, vitrain's
# networks, the tasks, timm's Mixup and RandomErasing) and what each may be
VALUE_RANGES: dict[str, tuple[Range, str]] = {
    "drop_path_rate": (RATE, "the stochastic depth (drop path) rate"),
    "drop_path": (RATE, "the stochastic depth (drop path) rate"),
    "drop_rate": (RATE, "the dropout rate"),
    "attn_drop_rate": (RATE, "the attention dropout rate"),
    "proj_drop_rate": (RATE, "the dropout rate"),
    "pos_drop_rate": (RATE, "the dropout rate"),
    "dropout": (RATE, "the dropout rate"),
    "label_smoothing": (RATE, "label smoothing"),
    "mask_ratio": (MASKED, "the fraction of patches masked"),
    "mask_prob": (MASKED, "the fraction of tokens masked"),
    "re_prob": (PROBABILITY, "the random erasing probability"),
    "mixup_prob": (PROBABILITY, "the mixup / cutmix probability"),
    "mixup_switch_prob": (PROBABILITY, "the mixup / cutmix switch probability"),
    "mixup_alpha": (NON_NEGATIVE, "mixup's Beta parameter (0: off)"),
    "cutmix_alpha": (NON_NEGATIVE, "cutmix's Beta parameter (0: off)"),
}


def rated_values(node: DictConfig, prefix: str) -> Iterator[tuple[str, str, float]]:
    """``(dotted key, leaf name, value)`` of every number under ``node`` whose leaf name is in
    ``VALUE_RANGES`` (only those are resolved; one that cannot resolve is left to its user)."""
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from rated_values(child, f"{prefix}.{key}")
        elif key in VALUE_RANGES:
            try:
                value = node[key]
            except Exception:  # noqa: BLE001  (an interpolation that does not resolve here)
                continue
            if is_number(value):
                yield f"{prefix}.{key}", str(key), value


def check_value_ranges(cfg: DictConfig) -> None:
    """Rates and probabilities of ``model`` and ``data`` (drop path, dropout, mask ratio, label
    smoothing, random erasing, mixup / cutmix) within their ranges."""
    for group in ("model", "data"):
        if not isinstance(cfg.get(group), DictConfig):
            continue
        for key, leaf, value in rated_values(cfg[group], group):
            valid, what = VALUE_RANGES[leaf]
            require_in(key, value, valid, what, f"set {key} to a value in {valid}")


def check_run_length(trainer: DictConfig) -> None:
    """Refuse a training run that would train nothing (and report untrained weights as a result)."""
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        value = trainer.get(key)
        if is_number(value) and value == 0:
            raise UserError(
                f"trainer.{key}=0: the run would train nothing and report the untrained weights. "
                f"Set trainer.{key} to a positive number (e.g. trainer.{key}=1), or use mode=eval or "
                "mode=test with ckpt_path=... to evaluate a checkpoint."
            )


def precision_values() -> tuple:
    """Lightning's accepted ``trainer.precision`` values (its ``_PRECISION_INPUT`` literals)."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    return tuple(v for literal in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(literal))


def check_precision(trainer: DictConfig) -> None:
    """``trainer.precision`` is one Lightning accepts (checked here, so the message names the key)."""
    precision = trainer.get("precision")
    if precision is None or precision in (valid := precision_values()):
        return
    strings = [v for v in valid if isinstance(v, str) and "-" in v]
    raise UserError(
        f"trainer.precision={precision}: not a precision Lightning knows. Choose one of "
        f"{', '.join(strings)} (e.g. trainer.precision=bf16-mixed on a GPU, 32-true on a CPU)."
    )


def check_loader_workers(data: DictConfig) -> None:
    """``data.batch_size`` and ``data.num_workers`` as every DataModule checks them
    (``vitrain.data.base.check_loader_settings``), before anything is built."""
    check_loader_settings(data.get("batch_size"), data.get("num_workers"))
