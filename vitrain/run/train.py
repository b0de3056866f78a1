"""What one run does: check the config, build the parts, fit or use the checkpoint, evaluate on the
held-out test split, summarise.

``run(cfg)`` is every mode; ``train`` is ``mode=train``. Each step is a function of its own module
in ``vitrain/run/`` (checks, build, lifecycle, evaluate, summary, modes); ``vitrain.run.entry.main``
wraps ``run`` for the command line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vitrain.callbacks import Preemption
from vitrain.callbacks.preemption import Preempted
from vitrain.loggers import finish_loggers
from vitrain.models.vit import count_parameters
from vitrain.run.build import (
    build_callbacks,
    build_datamodule,
    build_task,
    build_trainer,
    data_before_task,
    dry_run,
    find_callback,
)
from vitrain.run.checks import check_config
from vitrain.run.config_tree import save_config
from vitrain.run.ddp_sweeps import ddp_ranks_in_this_job
from vitrain.run.evaluate import setup_data_early, test_after_fit
from vitrain.run.lifecycle import (
    already_finished,
    keep_history_until,
    report_finished,
    resume_command,
    resume_from,
)
from vitrain.run.modes import use_checkpoint
from vitrain.run.scale import scale_batch_and_lr
from vitrain.run.stored_config import use_checkpoint_config
from vitrain.run.summary import finish_summary, make_summary, read_summary, report, write_summary

log = logging.getLogger("vitrain")


def run(cfg: DictConfig) -> float | None:
    """Train, evaluate, test, export or predict (``cfg.mode``) what ``cfg`` describes. Returns the
    best value of the task's monitored metric (a sweep's objective), or None."""
    hydra_cfg = HydraConfig.get()
    # eval / test / export / predict: the model and data configs stored in the checkpoint
    choices = use_checkpoint_config(cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task))
    check_config(cfg, choices)
    run_dir = Path(cfg.paths.output_dir)
    if cfg.mode == "train" and already_finished(previous := read_summary(run_dir), cfg):
        return report_finished(run_dir, previous, cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)

    scale_batch_and_lr(cfg)
    datamodule = data_before_task(cfg)  # first when the data decides sizes the network needs
    task = build_task(cfg)
    if cfg.get("dry_run"):
        return dry_run(cfg, task)
    if cfg.mode != "export":
        datamodule = datamodule or build_datamodule(cfg, task)
    save_config(cfg, run_dir)
    if cfg.mode == "train":
        return train(cfg, task, choices, datamodule)
    return use_checkpoint(cfg, task, choices, datamodule)


def train(cfg: DictConfig, task: L.LightningModule, choices: Any, datamodule) -> float | None:
    """Fit (resuming when asked), test the best checkpoint on the held-out split, write
    ``summary.json``. A preempted fit writes ``last.ckpt``, says how to continue and ends here."""
    run_dir = Path(cfg.paths.output_dir)
    params = count_parameters(task)
    ckpt_path, resume_step = resume_from(cfg, read_summary(run_dir))
    callbacks = build_callbacks(cfg, choices)
    setup_data_early(datamodule)  # a data mistake stops the run before a logger (a W&B run) exists
    trainer = build_trainer(cfg, callbacks)
    if resume_step is not None and trainer.is_global_zero:
        keep_history_until(trainer, resume_step)
    log.info("Training %s on %s; run directory: %s", choices.model, choices.data, run_dir)
    preemption = find_callback(trainer, Preemption)
    start, summary, test = time.perf_counter(), None, None

    def summarise() -> dict:
        config_path = run_dir / "resolved_config.yaml"
        return make_summary(trainer, task, time.perf_counter() - start, params, config_path, choices)

    try:
        with ddp_ranks_in_this_job(run_dir):
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
            # summarised before the test: trainer.test(ckpt_path=best) restores the callbacks'
            # states (RunStats' history and timings) from that older checkpoint
            summary = summarise()
            if not (preemption and preemption.received):
                test = test_after_fit(cfg, trainer, task, datamodule)
    except Preempted as stop:
        log.warning("Stopped by %s. Continue this run with:\n  %s", stop, resume_command(run_dir))
    finally:
        finish_loggers(trainer.loggers)
    interrupted = bool(preemption and preemption.received)
    summary = finish_summary(summary or summarise(), cfg, interrupted, ckpt_path, test)
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
        report(summary, run_dir)
    best = summary["best"]
    return None if best is None else best.get(task.monitor)
