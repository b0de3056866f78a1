"""Orchestration: the only module that touches Hydra / OmegaConf.

``run(cfg)`` builds data, task, callbacks, loggers and trainer from a composed config, trains,
and writes ``<run_dir>/summary.json``. ``main(cfg)`` wraps it for the command line: a user
mistake (``UserError``, or a config that cannot be instantiated) prints one message and
exits with status 1 instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf, open_dict

from vitrain.callbacks import AtomicCheckpointIO, CheckpointMetadata, Preemption, RunStats, Throughput
from vitrain.callbacks.preemption import Preempted
from vitrain.checkpoints import (
    find_latest,
    intact_checkpoints,
    load_checkpoint,
    load_task_weights,
    shorten_keys,
)
from vitrain.cli import CONF_DIR, config_groups
from vitrain.config_checks import check_loader_workers, check_precision, check_run_length, check_value_ranges
from vitrain.config_tree import save_config_tree
from vitrain.data.base import DataModule
from vitrain.ddp_sweeps import ddp_ranks_in_this_job
from vitrain.errors import UserError, require_choice, user_message
from vitrain.evaluation import (
    checkpoint_config,
    setup_data_early,
    test_after_fit,
    test_checkpoint,
    use_checkpoint_config,
)
from vitrain.loggers import finish_loggers, trim_csv_history
from vitrain.models import adapters
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


def _sweep_dir() -> str | None:
    """``${sweep_dir:}``: Hydra's sweep directory in a multirun, null in a single run (which has none)."""
    hydra_cfg = HydraConfig.get()
    return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def _loader_workers(most: int) -> int:
    """``${loader_workers:N}``: N loader processes, at most as many as the CPU cores this process
    may use (a 2-core machine gets 2, not 8: torch warns beyond that)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(int(most), cores))


def _has_gpu() -> bool:
    """``${has_gpu:}``: whether CUDA is available (``pin_memory`` only helps a GPU)."""
    return torch.cuda.is_available()


OmegaConf.register_new_resolver("task_monitor", _task_monitor, replace=True)
OmegaConf.register_new_resolver("loader_workers", _loader_workers, replace=True)
OmegaConf.register_new_resolver("has_gpu", _has_gpu, replace=True)
OmegaConf.register_new_resolver("sweep_dir", _sweep_dir, replace=True)
# ``--help`` lists the config groups (conf/hydra/default.yaml's help template)
OmegaConf.register_new_resolver("vitrain_config_groups", config_groups, replace=True)
OmegaConf.register_new_resolver("task_attr", _task_attr, replace=True)
# ``${cwd:}``: the launch directory. Unlike ``${hydra:runtime.cwd}`` it also resolves before a
# job starts, when the multirun sweeper creates ``hydra.sweep.dir`` (under ``paths.log_dir``).
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


MODES = ("train", "eval", "test", "export", "predict")


def main(cfg: DictConfig) -> float | None:
    """Command-line wrapper around ``run``.

    A user mistake logs one message and writes a failed ``summary.json``; a single run then
    exits with status 1, a multirun job returns NaN so the sweep goes on (Optuna records the
    trial as failed). Any other exception (a bug, NaN, out of memory) also writes a failed
    ``summary.json`` with the error; in a multirun it is logged with its traceback and the
    sweep goes on, in a single run it propagates (traceback, exit status 1).
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
    except Exception as err:  # a bug or a crash (NaN, out of memory)
        _record_failure(cfg, f"{type(err).__name__}: {err}")
        if not multirun:
            raise
        log.exception("Job failed")
        return float("nan")


def _record_failure(cfg: DictConfig, message: str) -> None:
    """A failed ``summary.json`` in the run directory (rank zero only)."""
    if rank_zero_only.rank == 0:
        record_failure(Path(cfg.paths.output_dir), message)


def record_failure(run_dir: Path, message: str) -> bool:
    """Write a failed ``summary.json`` in ``run_dir``; a finished run's summary is never replaced
    by a failure. Returns whether it was written."""
    previous = read_summary(run_dir)
    if previous.get("status") == "completed" and previous.get("mode", "train") == "train":
        log.error("The run in %s stays completed; this launch failed: %s", run_dir, message)
        return False
    write_summary(run_dir, {**previous, "status": "failed", "error": message})
    return True


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

    The shape of every mode: check the config, build the task (and the data, whose paths are
    checked before anything is printed or written), save the config, then fit / validate /
    export / predict and write ``summary.json``. Returns the best value of the task's monitored
    metric (the Optuna objective), or None.
    """
    choices = HydraConfig.get().runtime.choices
    choices = use_checkpoint_config(cfg, choices, list(HydraConfig.get().overrides.task))
    check_config(cfg, choices)
    run_dir = Path(cfg.paths.output_dir)
    if cfg.mode == "train" and already_finished(previous := read_summary(run_dir), cfg):
        return report_finished(run_dir, previous, cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    scale_batch_and_lr(cfg)
    datamodule = data_before_task(cfg)
    task = build_task(cfg)
    adapt_network(cfg, task)
    params = count_parameters(task)
    if cfg.get("dry_run"):
        task.build_optimizer()
        print(f"params: total={params[0]} trainable={params[1]}")
        if adapted(cfg.model):
            print_parameter_table(task)
        return None
    if cfg.mode != "export":
        datamodule = datamodule or build_datamodule(cfg, task)
    if rank_zero_only.rank == 0:
        save_config_tree(cfg, run_dir)
        OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    if cfg.mode == "train":
        return fit(cfg, task, params, choices, datamodule)
    return use_checkpoint(cfg, task, choices, datamodule)


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


def use_checkpoint(cfg: DictConfig, task: L.LightningModule, choices: Any, datamodule) -> float | None:
    """``mode=eval`` / ``export`` / ``predict`` of ``ckpt_path``; each writes ``summary.json``."""
    run_dir = Path(cfg.paths.output_dir)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    load_task_weights(task, checkpoint, cfg.ckpt_path, choices.get("model"))
    record = {"status": "completed", "mode": cfg.mode, "checkpoint": str(cfg.ckpt_path)}
    if cfg.mode == "export":
        if cfg.get("export_adapter"):
            adapter = task.save_adapter(run_dir / "export" / "adapter")
            log.info("Wrote the LoRA adapters alone (peft's format) to %s", adapter)
            record["adapter_dir"] = str(adapter)
        task.merge_adapters()  # the exported network needs no peft
        out = task.export(run_dir / "export", checkpoint.get("vitrain", {}))
        log.info("Exported the network of %s to %s", cfg.ckpt_path, out)
        write_summary(run_dir, {**record, "export_dir": str(out)})
        return None
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    if cfg.mode == "eval":
        return evaluate(trainer, task, datamodule, cfg, run_dir)
    if cfg.mode == "test":
        return test_checkpoint(trainer, task, datamodule, str(cfg.ckpt_path), run_dir)
    classes = checkpoint.get("vitrain", {}).get("class_names", [])
    paths, count = predict(trainer, task, datamodule, classes, run_dir)
    out = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
    write_summary(run_dir, {**record, "predictions": out, "files": count})
    return None


def fit(
    cfg: DictConfig, task: L.LightningModule, params: tuple[int, int], choices, datamodule
) -> float | None:
    """Train (resuming when asked), then write ``summary.json``."""
    run_dir = Path(cfg.paths.output_dir)
    previous = read_summary(run_dir)
    ckpt_path, resume_step = resume_from(cfg, previous)
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    callbacks = [
        *build_all(cfg.get("callbacks")),
        CheckpointMetadata(net_config, checkpoint_config(cfg, choices)),
    ]
    # Preemption acts last in each hook, so it sees a stop any other callback asked for in the same batch
    callbacks.sort(key=lambda callback: isinstance(callback, Preemption))
    setup_data_early(datamodule)  # data errors stop the run before a logger (W&B run) exists
    loggers = build_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    if resume_step is not None and trainer.is_global_zero:
        keep_history_until(trainer, resume_step)
    log.info("Training %s on %s; run directory: %s", choices.model, choices.data, run_dir)
    preemption = find_callback(trainer, Preemption)
    start = time.perf_counter()
    test, summary = None, None
    summarise = partial(make_summary, trainer, task, params=params, config_path=run_dir / "resolved_config.yaml",
                        choices=choices)  # fmt: skip
    try:
        with ddp_ranks_in_this_job(run_dir):
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
            # summarised before the test: trainer.test(ckpt_path=best) restores the callbacks'
            # states (RunStats' history and timings) from that older checkpoint
            summary = summarise(wall=time.perf_counter() - start)
            if not (preemption and preemption.received):
                test = test_after_fit(cfg, trainer, task, datamodule)
    except Preempted as stop:
        log.warning("Stopped by %s. Continue this run with:\n  %s", stop, resume_command(run_dir))
    finally:
        finish_loggers(trainer.loggers)
    summary = summary or summarise(wall=time.perf_counter() - start)
    summary["status"] = "interrupted" if preemption and preemption.received else "completed"
    summary["resumed_from"] = str(ckpt_path) if ckpt_path else None
    summary["limits"] = stopping_limits(cfg.trainer)
    summary["seed"] = cfg.get("seed")  # vitrain.report counts distinct seeds among repeats
    summary["test"] = test  # the best checkpoint on the held-out test split (None: no test split)
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
        report(summary, run_dir)
    best = summary["best"]
    return None if best is None else best.get(task.monitor)


def read_summary(run_dir: Path) -> dict:
    """The run directory's ``summary.json`` ({} when there is none or it is unreadable)."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def stopping_limits(trainer_cfg: DictConfig) -> dict:
    """The trainer settings that decide when a run is finished."""
    limits = {k: trainer_cfg.get(k) for k in ("max_epochs", "max_steps", "max_time")}
    return OmegaConf.to_container(OmegaConf.create(limits), resolve=True)


def already_finished(previous: dict, cfg: DictConfig) -> bool:
    """Whether ``previous`` (a summary) is a completed training run with the limits of ``cfg``: a
    re-launch of it (``resume=auto``, no ``ckpt_path``) then has nothing to do."""
    if previous.get("status") != "completed" or previous.get("mode", "train") != "train":
        return False
    if cfg.get("ckpt_path") or cfg.get("resume") != "auto":
        return False
    limits = previous.get("limits")
    if limits is None:  # a summary from before limits were recorded
        return previous.get("epochs") == cfg.trainer.get("max_epochs")
    return limits == stopping_limits(cfg.trainer)


def report_finished(run_dir: Path, previous: dict, cfg: DictConfig) -> float | None:
    """Leave a completed run as it is (nothing trained or rewritten); return its best value."""
    log.warning(
        "%s already holds a completed run (%s steps, %s epochs): nothing to do; its summary, metrics "
        "and checkpoints stay as they are. To train it further raise trainer.max_epochs (now %s) or "
        "trainer.max_steps; to start another run pick a new run_name.",
        run_dir, previous.get("global_step"), previous.get("epochs"), cfg.trainer.get("max_epochs"),
    )  # fmt: skip
    best = previous.get("best") or {}
    return best.get((previous.get("monitor") or {}).get("metric"))


def keep_history_until(trainer: L.Trainer, step: int) -> None:
    """Drop CSV rows a crashed segment logged after the checkpoint at ``step`` (they are redone)."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningCSVLogger):
            dropped = trim_csv_history(Path(logger.log_dir) / "metrics.csv", step)
            if dropped:
                log.info(
                    "Dropped %d metric rows logged after step %d (they are trained again).", dropped, step
                )


def resume_command(run_dir: Path) -> str:
    """The command line that continues the run in ``run_dir`` (``resume=auto`` is the default)."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "resume="))]
    args = ["python", sys.argv[0], *overrides, f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(a) for a in args)


def find_callback(trainer: L.Trainer, kind: type):
    """The first callback of type ``kind`` on ``trainer`` (None when there is none)."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


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


# model keys the orchestration applies after the task is built (conf/_base/adapt.yaml), not task arguments
ADAPT_KEYS = ("freeze", "frozen_eval", "lora")


def build_task(cfg: DictConfig) -> L.LightningModule:
    """Instantiate ``cfg.model`` (the network loads its weights), then adapt it: LoRA adapters and
    freezing (``model.lora``, ``model.freeze``, ``model.frozen_eval``; ``Task.adapt``)."""
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
    return task


def plain(value: Any) -> Any:
    """A config value as plain Python (containers resolved)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def adapted(model_cfg: DictConfig) -> bool:
    """Whether ``model`` freezes parameters or adds LoRA adapters."""
    return bool(model_cfg.get("freeze")) or bool(OmegaConf.select(model_cfg, "lora.r", default=0))


def print_parameter_table(task: L.LightningModule) -> None:
    """``dry_run``: parameters and trainable ones under each top-level name of the network (the
    names ``model.freeze`` patterns use)."""
    for name, total, trainable in adapters.parameter_table(task):
        print(f"  {name}: total={total} trainable={trainable}")


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


def resume_from(cfg: DictConfig, previous: dict) -> tuple[str | None, int | None]:
    """The checkpoint to resume from and its global step: ``ckpt_path``, or with ``resume=auto``
    the newest one of the run directory; ``(None, None)`` for a fresh start."""
    if cfg.get("ckpt_path"):
        checkpoint = load_checkpoint(cfg.ckpt_path)  # fail early and clearly on a missing or bad file
        return str(cfg.ckpt_path), int(checkpoint.get("global_step", 0))
    resume = cfg.get("resume")
    latest = find_latest(cfg.paths.checkpoint_dir)
    if resume in (None, False, "never"):
        if latest is not None or previous.get("status") in ("completed", "interrupted"):
            raise UserError(
                f"resume=never, but {cfg.paths.output_dir} already holds a run ({latest or 'summary.json'}): "
                "starting over there would overwrite it. Pick a new run_name (or hydra.run.dir), or "
                "resume=auto to continue it."
            )
        return None, None
    if resume != "auto":
        raise UserError(f"resume={resume}: use resume=auto (continue the newest checkpoint) or resume=never.")
    if latest is None:
        return None, None
    try:
        checkpoint = load_checkpoint(latest, key="resume=auto found")
    except UserError as err:
        intact = [p for p in intact_checkpoints(cfg.paths.checkpoint_dir) if p != latest]
        ways = "resume=never with a new run_name (start over)"
        if intact:
            ways = f"ckpt_path=<one of: {', '.join(str(p) for p in intact)}> (continue from it), or " + ways
        raise UserError(f"{err} Ways out: {ways}.") from err
    log.info("resume=auto: continuing from %s", latest)
    return str(latest), int(checkpoint.get("global_step", 0))


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


def predict(trainer, task, datamodule, classes: list[str], run_dir: Path) -> tuple[list[Path], int]:
    """Write the task's predictions of the data's predict split (images: the files under
    ``data.predict_dir``); returns the files written and the number of predictions.

    The task's :meth:`predict_rows` written by the DataModule's ``write_predictions`` (default:
    ``run_dir/predictions.csv``; GLUE writes its submission files)."""
    batches = trainer.predict(task, datamodule=datamodule)
    header, rows = task.predict_rows(batches, getattr(datamodule.predict_set, "files", None), classes)
    paths = datamodule.write_predictions(header, rows, run_dir)
    log.info("Wrote %d predictions to %s", len(rows), ", ".join(str(p) for p in paths))
    return paths, len(rows)


def write_summary(run_dir: Path, summary: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


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


def build_datamodule(cfg: DictConfig, task: L.LightningModule) -> L.LightningDataModule:
    """Instantiate ``cfg.data``; image modules also get the network's timm data config."""
    data_cls = get_class(cfg.data._target_)
    extra = {}
    if data_cls.wants_net_data_config:
        extra["net_data_config"] = net_data_config(task.net)
    return instantiate(cfg.data, **extra)


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


def make_summary(trainer, task, wall: float, params, config_path, choices) -> dict:
    """The content of ``summary.json``; the metrics and timings cover every segment of a resumed run
    (``RunStats`` keeps them in the checkpoints)."""
    ckpt = find_callback(trainer, ModelCheckpoint)
    stats = find_callback(trainer, RunStats) or RunStats()
    throughput = find_callback(trainer, Throughput)
    return {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "task": type(task).__name__,
        "monitor": {"metric": task.monitor, "mode": task.monitor_mode},
        "best": stats.best(task.monitor, task.monitor_mode),
        "last": stats.history[-1] if stats.history else None,
        "params": {"total": params[0], "trainable": params[1]},
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": round(max(wall, stats.fit_seconds), 2),
        # one definition (the Throughput callback's, checkpointed): end to end, data loading
        # included, validation excluded; "throughput" adds step time, TFLOP/s and MFU
        "train_samples_per_s": rate(throughput, "samples_per_s"),
        "throughput": throughput.summary() if throughput else None,
        "checkpoints": {
            "best": (ckpt.best_model_path or None) if ckpt else None,
            "last": (ckpt.last_model_path or None) if ckpt else None,
        },
        "config": str(config_path),
    }


def rate(throughput: Throughput | None, key: str) -> float | None:
    """``throughput.summary()[key]`` rounded to 2 decimals (None without the callback or a
    measured batch)."""
    value = throughput.summary()[key] if throughput else None
    return None if value is None else round(value, 2)


def report(summary: dict, run_dir: Path) -> None:
    """Log the final metrics and where the run lives."""
    for name in ("best", "last"):
        if summary[name]:
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in summary[name].items() if k.startswith("val/"))
            log.info("%s (epoch %d): %s", name, summary[name]["epoch"], metrics)
    samples = summary["train_samples_per_s"]
    log.info(
        "%d steps in %.1f s (%s train samples/s). Run directory: %s",
        summary["global_step"],
        summary["wall_time_s"],
        "n/a" if samples is None else f"{samples:.0f}",
        run_dir,
    )
