"""Orchestration: the only module that touches Hydra / OmegaConf.

``run(cfg)`` builds data, task, callbacks, loggers and trainer from a composed config, trains,
and writes ``<run_dir>/summary.json``. ``main(cfg)`` wraps it for the command line: a user
mistake (``UserError``, or a config that cannot be instantiated) prints one message and
exits with status 1 instead of a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vitrain.callbacks import (
    EMA,
    AtomicCheckpointIO,
    CheckpointMetadata,
    ExactResume,
    Preemption,
    RunStats,
    Throughput,
)
from vitrain.callbacks.preemption import Preempted
from vitrain.checkpoints import export_network, find_latest, load_checkpoint, task_state_dict
from vitrain.config_tree import save_config_tree
from vitrain.errors import UserError, user_message
from vitrain.loggers import finish_loggers
from vitrain.models.vit import count_parameters

log = logging.getLogger("vitrain")


def _task_monitor(field: str = "metric", *, _root_: DictConfig) -> str:
    """The model's task decides what to monitor: ``${task_monitor:}`` is the metric,
    ``${task_monitor:mode}`` "max" or "min", ``${task_monitor:direction}`` Optuna's "maximize" or
    "minimize"."""
    task_cls = get_class(_root_.model._target_)
    if field == "metric":
        return task_cls.monitor
    if field == "direction":
        return "maximize" if task_cls.monitor_mode == "max" else "minimize"
    return task_cls.monitor_mode


def _task_attr(name: str, *, _root_: DictConfig) -> Any:
    """``${task_attr:NAME}``: a class attribute of the model's task (``data=text`` takes its packing)."""
    return getattr(get_class(_root_.model._target_), name, None)


OmegaConf.register_new_resolver("task_monitor", _task_monitor, replace=True)
OmegaConf.register_new_resolver("task_attr", _task_attr, replace=True)
# ``${cwd:}``: the launch directory. Unlike ``${hydra:runtime.cwd}`` it also resolves before a
# job starts, when the multirun sweeper creates ``hydra.sweep.dir`` (under ``paths.log_dir``).
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


MODES = ("train", "eval", "export", "predict")


def main(cfg: DictConfig) -> float | None:
    """Command-line wrapper around ``run``.

    A user mistake logs one message and writes a failed ``summary.json``; a single run then
    exits with status 1, a multirun job returns NaN so the sweep goes on (Optuna records the
    trial as failed). In a multirun any other exception is recorded the same way (with its
    traceback in the log); in a single run it propagates.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except (UserError, InstantiationException) as err:
        message = _error_text(err)
        log.error(message)
        _record_failure(cfg, message)
        if multirun:
            return float("nan")
        sys.exit(1)
    except Exception as err:  # a bug or a crash (NaN, out of memory): keep the sweep going
        if not multirun:
            raise
        log.exception("Job failed")
        _record_failure(cfg, f"{type(err).__name__}: {err}")
        return float("nan")


def _record_failure(cfg: DictConfig, message: str) -> None:
    if rank_zero_only.rank == 0:
        write_summary(Path(cfg.paths.output_dir), {"status": "failed", "error": message})


def _error_text(err: Exception) -> str:
    """The message to show for ``err``: the innermost ``UserError`` in its chain, if any."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, UserError):
            return user_message(cause)
        cause = cause.__cause__ or cause.__context__
    return str(err)


def run(cfg: DictConfig) -> float | None:
    """Train, evaluate, export or predict (``cfg.mode``) what ``cfg`` describes.

    Returns the best value of the task's monitored metric (the Optuna objective), or None.
    """
    choices = HydraConfig.get().runtime.choices
    check_pairing(cfg, choices)
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode}: choose one of {', '.join(MODES)}.")
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    scale_batch_and_lr(cfg)
    datamodule = data_before_task(cfg)
    task = instantiate(cfg.model, _convert_="object")
    adapt_network(cfg, task)
    total, trainable = count_parameters(task)
    if cfg.get("dry_run"):
        task.build_optimizer()
        print(f"params: total={total} trainable={trainable}")
        return None

    if rank_zero_only.rank == 0:
        save_config_tree(cfg, run_dir)
        OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    if cfg.mode == "train":
        return fit(cfg, task, (total, trainable), choices, datamodule)
    if not cfg.get("ckpt_path"):
        raise UserError(f"mode={cfg.mode} needs ckpt_path=<checkpoint file>.")
    checkpoint = load_checkpoint(cfg.ckpt_path)
    if cfg.mode == "export":
        out = export_network(checkpoint, run_dir / "export")
        log.info("Exported the network of %s to %s", cfg.ckpt_path, out)
        return None
    task.load_state_dict(task_state_dict(checkpoint))
    datamodule = datamodule or build_datamodule(cfg, task)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    if cfg.mode == "eval":
        return evaluate(trainer, task, datamodule, cfg, run_dir)
    classes = checkpoint.get("vitrain", {}).get("class_names", [])
    predict(trainer, task, datamodule, classes, run_dir / "predictions.csv")
    return None


def fit(
    cfg: DictConfig, task: L.LightningModule, params: tuple[int, int], choices, datamodule=None
) -> float | None:
    """Train (resuming when asked), then write ``summary.json``."""
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_from(cfg)
    datamodule = datamodule or build_datamodule(cfg, task)
    stats, preemption = RunStats(), Preemption(cfg.paths.checkpoint_dir)
    seed = cfg.seed if cfg.get("seed") is not None else torch.initial_seed() % 2**31
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    callbacks = [
        *build_all(cfg.get("callbacks")),
        stats,
        preemption,
        ExactResume(seed),
        CheckpointMetadata(net_config),
    ]
    if cfg.ema.enabled:
        callbacks.append(EMA(decay=cfg.ema.decay, warmup=cfg.ema.warmup))
    loggers = build_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    log.info("Training %s on %s; run directory: %s", choices.model, choices.data, run_dir)
    start = time.perf_counter()
    try:
        with ddp_ranks_in_this_job(run_dir):
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    except Preempted as stop:
        log.warning("Stopped by %s; continue with the same run_name (resume=auto).", stop)
    finally:
        finish_loggers(trainer.loggers)
    wall = time.perf_counter() - start

    summary = make_summary(trainer, task, stats, wall, params, run_dir / "resolved_config.yaml", choices)
    summary["status"] = "interrupted" if preemption.received else "completed"
    summary["resumed_from"] = str(ckpt_path) if ckpt_path else None
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
        report(summary, run_dir)
    best = summary["best"]
    return None if best is None else best.get(task.monitor)


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
        task.net = torch.compile(task.net)


@contextlib.contextmanager
def ddp_ranks_in_this_job(run_dir: Path):
    """Make Lightning's DDP launcher start the other ranks as this job, not a new sweep.

    Lightning re-runs the command line for ranks > 0 with ``hydra.run.dir`` set to Hydra's
    *run* dir. In a multirun that command holds ``-m`` and the sweep lists, so every rank would
    start its own sweep (Lightning #11617). Inside this context the command is this job's own
    overrides and the run dir this job's directory. On exit the process group and the
    environment variables the launcher set (``LOCAL_RANK``, ``MASTER_PORT``, ...) are cleared,
    so the next job of the sweep launches its own ranks.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, environ = list(sys.argv), dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(run_dir)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)


def resume_from(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path``, or with ``resume=auto`` the newest one."""
    if cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path)  # fail early and clearly on a missing or bad file
        return str(cfg.ckpt_path)
    resume = cfg.get("resume")
    if resume in (None, False, "never"):
        return None
    if resume != "auto":
        raise UserError(f"resume={resume}: use resume=auto (continue the newest checkpoint) or resume=never.")
    latest = find_latest(cfg.paths.checkpoint_dir)
    if latest is None:
        return None
    load_checkpoint(latest, key="resume=auto found")
    log.info("resume=auto: continuing from %s", latest)
    return str(latest)


def evaluate(trainer, task, datamodule, cfg: DictConfig, run_dir: Path) -> float | None:
    """Validate a checkpoint and write its own ``summary.json``."""
    (metrics,) = trainer.validate(task, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in metrics.items()}
    if trainer.is_global_zero:
        write_summary(
            run_dir,
            {"status": "completed", "mode": "eval", "checkpoint": str(cfg.ckpt_path), "metrics": metrics},
        )
        log.info("eval %s: %s", cfg.ckpt_path, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics.get(task.monitor)


def predict(trainer, task, datamodule, classes: list[str], out: Path) -> None:
    """Write each file's top-5 classes and probabilities to ``out`` (CSV)."""
    batches = trainer.predict(task, datamodule=datamodule)
    probs = torch.cat([b for b in batches]).float()
    k = min(5, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    names = classes or [str(i) for i in range(probs.shape[1])]
    header = ["file"] + [f"{field}_{r}" for r in range(1, k + 1) for field in ("class", "prob")]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for path, ps, idx in zip(datamodule.predict_set.files, top_p.tolist(), top_i.tolist(), strict=True):
            row = [str(path)]
            for p, i in zip(ps, idx, strict=True):
                row += [names[i], f"{p:.6f}"]
            writer.writerow(row)
    log.info("Wrote %d predictions to %s", len(probs), out)


def write_summary(run_dir: Path, summary: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


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


def data_before_task(cfg: DictConfig) -> L.LightningDataModule | None:
    """Build the data first when it decides network sizes (``model_sizes()``, e.g. the vocabulary
    of a tokenizer trained on the corpus): each ``model.net`` entry left null takes the data's
    value. Returns the DataModule, or None for data that needs no such step."""
    if not hasattr(get_class(cfg.data._target_), "model_sizes"):
        return None
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        for key, value in datamodule.model_sizes().items():
            if key in cfg.data and cfg.data[key] is None:  # e.g. num_classes read from shards
                cfg.data[key] = value
            if cfg.model.net.get(key) is None:
                cfg.model.net[key] = value
    # image data is built again with the network's timm data config (build_datamodule)
    return None if getattr(datamodule, "wants_net_data_config", False) else datamodule


def net_data_config(net) -> dict:
    """timm's preferred mean/std/interpolation/crop_pct for ``net`` ({} for non-timm nets)."""
    net = getattr(net, "_orig_mod", net)  # under torch.compile
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
        # samples over the time inside training batches (compute only); "throughput" below is
        # end to end (data loading included), with step time, TFLOP/s and MFU
        "train_samples_per_s": round(stats.samples_per_second, 2),
        "throughput": next((c.summary() for c in trainer.callbacks if isinstance(c, Throughput)), None),
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
