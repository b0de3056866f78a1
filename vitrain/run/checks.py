"""Checks of a composed config that need no data and no network: values a run would otherwise
trip over late (a traceback at the first step) or silently (a run that trains nothing), and a
model paired with data of another kind.

Each check raises :class:`vitrain.errors.UserError` naming the key, its value and the fix;
:func:`check_config` runs them all before anything is built.
"""

from __future__ import annotations

import logging
import os
import typing
from collections.abc import Iterator
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vitrain.data.base import DataModule, check_loader_settings
from vitrain.errors import Range, UserError, is_number, require_choice, require_in
from vitrain.run.cli import CONF_DIR
from vitrain.run.scale import world_size

log = logging.getLogger("vitrain")

MODES = ("train", "eval", "test", "export", "predict")


def check_config(cfg: DictConfig, choices: Any) -> None:
    """The checks that need no network or data: pairing, mode, seed, run length, value ranges,
    precision, loader workers, CPU processes."""
    check_pairing(cfg, choices)
    require_choice("mode", cfg.mode, MODES)
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError(f"seed={seed!r}: must be an integer (e.g. seed=42) or null (unseeded).")
    if cfg.mode != "train" and not cfg.get("ckpt_path"):
        raise UserError(f"mode={cfg.mode} needs ckpt_path=<checkpoint file>.")
    if cfg.mode == "train":
        check_run_length(cfg.trainer)
    check_value_ranges(cfg)
    check_precision(cfg.trainer)
    check_loader_workers(cfg.data)
    check_cpu_processes(cfg.trainer)


def check_pairing(cfg: DictConfig, choices: Any) -> None:
    """Fail before building anything when the model's task cannot use the chosen data."""
    task_cls, data_cls = get_class(cfg.model._target_), get_class(cfg.data._target_)
    if not issubclass(data_cls, DataModule):
        raise UserError(
            f"data={choices.get('data')}: {cfg.data._target_} is not a vitrain DataModule: the data's "
            "_target_ must be a subclass of vitrain.data.base.DataModule (see docs/development.md)."
        )
    needs, has = getattr(task_cls, "data_kind", None), data_cls.kind
    if needs != has:
        options = "|".join(data_options(needs)) or "<a data config of that kind>"
        raise UserError(
            f"model={choices.get('model')} ({task_cls.__name__}) needs {needs} data, but "
            f"data={choices.get('data')} ({data_cls.__name__}) provides {has} data. Add "
            f"data={options} (the data configs of kind {needs}), or choose another model."
        )


def data_options(kind: str) -> list[str]:
    """The ``conf/data`` options whose DataModule provides data of ``kind``."""
    options = []
    for path in sorted((CONF_DIR / "data").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        if target and get_class(target).kind == kind:
            options.append(path.stem)
    return options


def check_cpu_processes(trainer_cfg: DictConfig) -> None:
    """Refuse more CPU processes than cores unless a strategy was chosen explicitly."""
    accelerator = trainer_cfg.get("accelerator", "auto")
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        return
    processes, cores = world_size(trainer_cfg) // int(trainer_cfg.get("num_nodes", 1)), os.cpu_count() or 1
    if processes <= cores:
        return
    if trainer_cfg.get("strategy", "auto") == "auto":
        raise UserError(
            f"trainer.devices={trainer_cfg.get('devices')} starts {processes} CPU processes on a machine "
            f"with {cores} cores: lower trainer.devices to at most {cores} (trainer=ddp_cpu uses 2), or "
            "choose trainer.strategy explicitly (e.g. trainer.strategy=ddp) if you mean it."
        )
    log.warning("%d CPU processes on %d cores: they will compete for the cores.", processes, cores)


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
