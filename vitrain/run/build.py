"""Building the parts of a run from its config: the task (its network loaded and adapted), the
DataModule, the callbacks, the loggers and the trainer."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf, open_dict

from vitrain.callbacks import AtomicCheckpointIO, CheckpointMetadata, Preemption
from vitrain.checkpoints import shorten_keys
from vitrain.errors import UserError
from vitrain.models import adapters
from vitrain.models.vit import count_parameters
from vitrain.run.stored_config import checkpoint_config

log = logging.getLogger("vitrain")

# model keys applied after the task is built (conf/_base/adapt.yaml), not task arguments
ADAPT_KEYS = ("freeze", "frozen_eval", "lora")


def build_task(cfg: DictConfig) -> L.LightningModule:
    """Instantiate ``cfg.model`` (the network loads its weights), then adapt it: LoRA adapters and
    freezing (``model.lora``, ``model.freeze``, ``model.frozen_eval``; ``Task.adapt``), activation
    checkpointing and ``torch.compile`` when asked."""
    keys = [key for key in ADAPT_KEYS if key in cfg.model]
    values = {key: plain(cfg.model[key]) for key in keys}
    with open_dict(cfg):
        nodes = {key: cfg.model.pop(key) for key in keys}
    try:
        task = instantiate(cfg.model, _convert_="object")
    finally:
        with open_dict(cfg):
            cfg.model.update(nodes)
    if values:
        task.adapt(**values)
    if task.frozen_eval_modules:
        log.info(
            "Frozen, so in eval mode while training (model.frozen_eval): %s",
            shorten_keys(task.frozen_eval_modules, 8),
        )
        # Lightning warns about modules in eval mode at the start of fit: here they are meant
        warnings.filterwarnings(
            "ignore", message=r"Found \d+ module\(s\) in eval mode", category=PossibleUserWarning
        )
    adapt_network(cfg, task)
    return task


def plain(value: Any) -> Any:
    """A config value as plain Python (containers resolved)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def adapt_network(cfg: DictConfig, task: L.LightningModule) -> None:
    """Activation checkpointing and ``torch.compile`` of ``task.net`` when asked."""
    if cfg.get("activation_checkpointing"):
        if not hasattr(task.net, "set_grad_checkpointing"):
            raise UserError(
                f"activation_checkpointing=true: {type(task.net).__name__} does not support it "
                "(it needs set_grad_checkpointing); set activation_checkpointing=false."
            )
        task.net.set_grad_checkpointing(True)
    if cfg.get("compile"):
        task.net.compile()  # in place: parameter and state-dict names stay those of the network


def dry_run(cfg: DictConfig, task: L.LightningModule) -> None:
    """``dry_run=true``: build the optimizer, print ``params: total=<int> trainable=<int>`` and, for
    a frozen or adapted network, the parameters under each top-level name (the names
    ``model.freeze`` patterns use)."""
    total, trainable = count_parameters(task)
    task.build_optimizer()
    print(f"params: total={total} trainable={trainable}")
    if cfg.model.get("freeze") or OmegaConf.select(cfg.model, "lora.r", default=0):
        for name, total, trainable in adapters.parameter_table(task):
            print(f"  {name}: total={total} trainable={trainable}")


def data_before_task(cfg: DictConfig) -> L.LightningDataModule | None:
    """Build the data first when it decides network sizes the config leaves null
    (``model_size_keys`` / ``model_sizes()``: the vocabulary of a tokenizer trained on the
    corpus, the class folders of an ImageFolder, the categories of a COCO file): a null
    ``data`` entry and each null ``model.net`` entry take the data's value. Returns the
    DataModule to reuse, or None (nothing to take, or image data that is rebuilt later with
    the network's timm data config)."""
    data_cls = get_class(cfg.data._target_)
    keys = data_cls.model_size_keys
    if not any(key in cfg.model.net and cfg.model.net.get(key) is None for key in keys):
        return None
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        for key, value in datamodule.model_sizes().items():
            if key in cfg.data and cfg.data[key] is None:  # e.g. num_classes read from shards
                cfg.data[key] = value
            if cfg.model.net.get(key) is None:
                cfg.model.net[key] = value
    # image data is built again with the network's timm data config (build_datamodule)
    return None if datamodule.wants_net_data_config else datamodule


def build_datamodule(cfg: DictConfig, task: L.LightningModule) -> L.LightningDataModule:
    """Instantiate ``cfg.data``; image modules also get the network's timm data config."""
    data_cls = get_class(cfg.data._target_)
    extra = {}
    if data_cls.wants_net_data_config:
        extra["net_data_config"] = net_data_config(task.net)
    return instantiate(cfg.data, **extra)


def net_data_config(net) -> dict:
    """timm's preferred mean/std/interpolation/crop_pct for ``net`` ({} for non-timm nets)."""
    if not hasattr(net, "pretrained_cfg"):
        return {}
    from timm.data import resolve_model_data_config

    return dict(resolve_model_data_config(net))


def build_all(group: DictConfig | None) -> list:
    """Instantiate each non-null entry of a dict of configs (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def build_callbacks(cfg: DictConfig, choices: Any) -> list[L.Callback]:
    """The ``callbacks`` group, plus the metadata that lets a checkpoint be used alone (its
    network and its ``model`` / ``data`` configs)."""
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    callbacks = [
        *build_all(cfg.get("callbacks")),
        CheckpointMetadata(net_config, checkpoint_config(cfg, choices)),
    ]
    # Preemption acts last in each hook, so it sees a stop any other callback asked for in the same batch
    callbacks.sort(key=lambda callback: isinstance(callback, Preemption))
    return callbacks


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback]) -> L.Trainer:
    """The ``trainer`` with ``callbacks``, the ``logger`` group and atomic checkpoint writes."""
    loggers = build_all(cfg.get("logger"))
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )


def find_callback(trainer: L.Trainer, kind: type):
    """The first callback of type ``kind`` on ``trainer`` (None when there is none)."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)
