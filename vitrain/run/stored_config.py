"""Checkpoints that carry their own configuration.

A checkpoint stores the composed ``model`` and ``data`` configs and the group choices
(:func:`checkpoint_config`, saved by ``vitrain.callbacks.CheckpointMetadata``);
``mode=eval|test|export|predict`` rebuild them from it (:func:`use_checkpoint_config`), so only
``ckpt_path`` (and a ``data.root`` when the data moved) is needed. A command-line override that
contradicts the checkpoint is one :class:`UserError`.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vitrain.checkpoints import load_checkpoint
from vitrain.errors import UserError

log = logging.getLogger("vitrain")

GROUPS = ("model", "data")
# data settings that decide the network's shapes or the meaning of its outputs: an override
# must agree with the checkpoint (the others, e.g. root, batch_size, num_workers, apply)
DATA_IDENTITY = (
    "num_classes",
    "image_size",
    "in_chans",
    "tokenizer",
    "vocab_size",
    "lowercase",
    "contiguous_ids",
)
# data settings that describe the machine, not the model: a checkpoint keeps their resolvers
# (``${loader_workers:8}``, ``${has_gpu:}``), so a reuse elsewhere fits the machine it runs on
MACHINE_KEYS = ("num_workers", "pin_memory")


def checkpoint_config(cfg: DictConfig, choices: Any) -> dict:
    """What a checkpoint stores to be used alone: the group choices and the resolved ``model``
    and ``data`` configs (primitives only, so ``torch.load(weights_only=True)`` reads them),
    except the :data:`MACHINE_KEYS` of ``data`` given by a resolver, stored unresolved."""
    stored = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in GROUPS}
    for key in MACHINE_KEYS:
        node = cfg.data._get_node(key) if key in cfg.data else None
        if node is not None and OmegaConf.is_interpolation(cfg.data, key):
            stored["data"][key] = node._value()
    return {"choices": {group: choices.get(group) for group in GROUPS}, **stored}


def use_checkpoint_config(cfg: DictConfig, choices: Any, overrides: list[str]) -> Any:
    """For ``mode`` eval/test/export/predict: replace ``cfg.model`` and ``cfg.data`` by the
    configs stored in ``ckpt_path`` (checkpoints written before vitrain stored them are left to
    the command line). Returns the choices to report (the checkpoint's).

    ``overrides`` are the command line's (Hydra's ``overrides.task``). ``model=X`` / ``data=Y``
    must name the checkpoint's choices; ``model.*`` overrides must equal the stored values;
    ``data.*`` overrides apply (a moved ``data.root``, another ``batch_size``) except those
    that decide the network's shapes (:data:`DATA_IDENTITY`), which must agree.
    """
    if cfg.mode == "train" or not cfg.get("ckpt_path"):
        return choices
    stored = load_checkpoint(cfg.ckpt_path).get("vitrain", {}).get("config")
    if not stored:
        return choices
    where = f"ckpt_path={cfg.ckpt_path}"
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in GROUPS and value != stored["choices"][key]:
            raise UserError(
                f"{key}={value} contradicts the checkpoint, trained with {key}={stored['choices'][key]} "
                f"({where}): drop {key}={value}, the checkpoint's {key} is used."
            )
        group, _, path = key.partition(".")
        if group not in GROUPS or not path:
            continue
        given = OmegaConf.select(cfg[group], path)
        kept = OmegaConf.select(OmegaConf.create(stored[group]), path)
        if (group == "model" or path in DATA_IDENTITY) and given != kept:
            raise UserError(
                f"{key}={given} contradicts the checkpoint, trained with {key}={kept} ({where}): "
                f"drop the override (the checkpoint's value is used)."
            )
    data = OmegaConf.create(stored["data"])
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key.startswith("data.") and key[5:] not in DATA_IDENTITY:
            OmegaConf.update(data, key[5:], OmegaConf.select(cfg.data, key[5:]), force_add=True)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(stored["model"])
        cfg.data = data
    log.info(
        "Using the model (%s) and data (%s) of %s",
        stored["choices"]["model"],
        stored["choices"]["data"],
        where,
    )
    return dict(stored["choices"])
