"""The global batch: how many processes a run has, the gradient accumulation that reaches
``global_batch_size`` and the learning rate scaled from ``base_lr`` (the DeiT / MAE rule)."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, open_dict

from vitrain.errors import UserError

log = logging.getLogger("vitrain")


def world_size(trainer_cfg: DictConfig) -> int:
    """Processes of the run: devices per node x nodes (``devices=-1``/``auto``: all GPUs)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if devices in (-1, "auto"):
        on_gpu = trainer_cfg.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if on_gpu else 1
    elif not isinstance(devices, int):  # a list of device ids
        devices = len(devices)
    return devices * int(trainer_cfg.get("num_nodes", 1))


def derive_accumulation(per_device: int, world: int, global_batch: int | None, accumulate: int) -> int:
    """Gradient accumulation that makes ``per_device x world x accumulation == global_batch``."""
    if not global_batch:
        return accumulate
    per_step = per_device * world
    if global_batch % per_step:
        raise UserError(
            f"global_batch_size={global_batch} is not a multiple of data.batch_size x devices = "
            f"{per_device} x {world} = {per_step}: change data.batch_size or global_batch_size."
        )
    return global_batch // per_step


def scaled_lr(base_lr: float, global_batch: int, reference: int = 256) -> float:
    """The linear scaling rule of DeiT and MAE: ``lr = base_lr * global_batch / 256``."""
    return base_lr * global_batch / reference


def scale_batch_and_lr(cfg: DictConfig) -> None:
    """Set ``trainer.accumulate_grad_batches`` and ``optimizer.lr`` from the global batch rules."""
    world = world_size(cfg.trainer)
    accumulate = derive_accumulation(
        cfg.data.batch_size, world, cfg.get("global_batch_size"), cfg.trainer.accumulate_grad_batches
    )
    global_batch = cfg.data.batch_size * world * accumulate
    with open_dict(cfg):
        cfg.trainer.accumulate_grad_batches = accumulate
        if cfg.get("base_lr") is not None:
            cfg.optimizer.lr = scaled_lr(cfg.base_lr, global_batch)
    log.info(
        "Global batch %d = %d per device x %d processes x %d accumulation; lr %g",
        global_batch, cfg.data.batch_size, world, accumulate, cfg.optimizer.lr,
    )  # fmt: skip
