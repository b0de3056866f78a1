"""Orchestration: the only module that touches Hydra / OmegaConf.

``run(cfg)`` builds data, task, callbacks, loggers and trainer from a composed config, trains,
and writes ``<run_dir>/summary.json``. ``main(cfg)`` wraps it for the command line: a user
mistake (``UserError``, or a config that cannot be instantiated) prints one message and
exits with status 1 instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from vitrain.callbacks import RunStats
from vitrain.config_tree import save_config_tree
from vitrain.errors import UserError, user_message
from vitrain.models.vit import count_parameters

log = logging.getLogger("vitrain")


def _task_monitor(field: str = "metric", *, _root_: DictConfig) -> str:
    """``${task_monitor:}`` / ``${task_monitor:mode}``: the model's task decides what to monitor."""
    task_cls = get_class(_root_.model._target_)
    return task_cls.monitor if field == "metric" else task_cls.monitor_mode


OmegaConf.register_new_resolver("task_monitor", _task_monitor, replace=True)


def main(cfg: DictConfig) -> float | None:
    """Command-line wrapper around ``run``: user mistakes end with one message, exit 1."""
    try:
        return run(cfg)
    except (UserError, InstantiationException) as err:
        log.error(_error_text(err))
        sys.exit(1)


def _error_text(err: Exception) -> str:
    """The message to show for ``err``: the innermost ``UserError`` in its chain, if any."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, UserError):
            return user_message(cause)
        cause = cause.__cause__ or cause.__context__
    return str(err)


def run(cfg: DictConfig) -> float | None:
    """Train (or with ``dry_run`` only build) what ``cfg`` describes.

    Returns the best value of the task's monitored metric (the Optuna objective), or None.
    """
    choices = HydraConfig.get().runtime.choices
    check_pairing(cfg, choices)
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    task = instantiate(cfg.model, _convert_="object")
    total, trainable = count_parameters(task)
    if cfg.get("dry_run"):
        task.build_optimizer()
        print(f"params: total={total} trainable={trainable}")
        return None

    save_config_tree(cfg, run_dir, show=rank_zero_only.rank == 0)
    resolved_config = run_dir / "resolved_config.yaml"
    OmegaConf.save(cfg, resolved_config, resolve=True)
    datamodule = build_datamodule(cfg, task)
    stats = RunStats()
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=[*build_all(cfg.get("callbacks")), stats], logger=build_all(cfg.get("logger"))
    )
    log.info("Training %s on %s; run directory: %s", choices.model, choices.data, run_dir)
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    wall = time.perf_counter() - start

    summary = make_summary(trainer, task, stats, wall, (total, trainable), resolved_config, choices)
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        report(summary, run_dir)
    best = summary["best"]
    return None if best is None else best.get(task.monitor)


def check_pairing(cfg: DictConfig, choices: Any) -> None:
    """Fail before building anything when the model's task cannot use the chosen data."""
    task_cls, data_cls = get_class(cfg.model._target_), get_class(cfg.data._target_)
    needs, has = getattr(task_cls, "data_kind", None), getattr(data_cls, "kind", None)
    if needs != has:
        raise UserError(
            f"model={choices.get('model')} ({task_cls.__name__}) needs {needs} data, but "
            f"data={choices.get('data')} ({data_cls.__name__}) provides {has} data. Choose a "
            f"data config of kind {needs} or another model."
        )


def build_datamodule(cfg: DictConfig, task: L.LightningModule) -> L.LightningDataModule:
    """Instantiate ``cfg.data``; image modules also get the network's timm data config."""
    data_cls = get_class(cfg.data._target_)
    extra = {}
    if getattr(data_cls, "wants_net_data_config", False):
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


def make_summary(trainer, task, stats: RunStats, wall: float, params, config_path, choices) -> dict:
    """The content of ``summary.json``."""
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    return {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "monitor": {"metric": task.monitor, "mode": task.monitor_mode},
        "best": stats.best(task.monitor, task.monitor_mode),
        "last": stats.history[-1] if stats.history else None,
        "params": {"total": params[0], "trainable": params[1]},
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": round(wall, 2),
        "train_samples_per_s": round(stats.samples_per_second, 2),
        "checkpoints": {
            "best": (ckpt.best_model_path or None) if ckpt else None,
            "last": (ckpt.last_model_path or None) if ckpt else None,
        },
        "config": str(config_path),
    }


def report(summary: dict, run_dir: Path) -> None:
    """Log the final metrics and where the run lives."""
    for name in ("best", "last"):
        if summary[name]:
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in summary[name].items() if k.startswith("val/"))
            log.info("%s (epoch %d): %s", name, summary[name]["epoch"], metrics)
    log.info(
        "%d steps in %.1f s (%.0f train samples/s). Run directory: %s",
        summary["global_step"],
        summary["wall_time_s"],
        summary["train_samples_per_s"],
        run_dir,
    )
