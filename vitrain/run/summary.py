"""``summary.json``: the one file a run directory's readers need (sweep tables, reports, scripts).

Every writer goes through :func:`write_summary`: a training run's summary (:func:`make_summary`,
completed by :func:`finish_summary`), a checkpoint's ``mode=eval|test|export|predict`` record,
and a failure (:func:`record_failure`), which never replaces a completed run's summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vitrain.callbacks import RunStats, Throughput
from vitrain.run.build import find_callback

log = logging.getLogger("vitrain")


def read_summary(run_dir: Path) -> dict:
    """The run directory's ``summary.json`` ({} when there is none or it is unreadable)."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def write_summary(run_dir: Path, summary: dict) -> None:
    """Write ``run_dir/summary.json`` (the folder is created when missing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def record_failure(run_dir: Path, message: str) -> bool:
    """Write a failed ``summary.json`` in ``run_dir``; a finished run's summary is never replaced
    by a failure. Returns whether it was written."""
    previous = read_summary(run_dir)
    if previous.get("status") == "completed" and previous.get("mode", "train") == "train":
        log.error("The run in %s stays completed; this launch failed: %s", run_dir, message)
        return False
    write_summary(run_dir, {**previous, "status": "failed", "error": message})
    return True


def make_summary(
    trainer: L.Trainer,
    task: L.LightningModule,
    wall: float,
    params: tuple[int, int],
    config_path: Path,
    choices: Any,
) -> dict:
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


def finish_summary(
    summary: dict, cfg: DictConfig, interrupted: bool, resumed_from: str | None, test: dict | None
) -> dict:
    """Add how the run ended to ``summary``: its status, the checkpoint it resumed from, the limits
    that decide whether it is finished, the seed, and the held-out test metrics (None: no test)."""
    summary["status"] = "interrupted" if interrupted else "completed"
    summary["resumed_from"] = str(resumed_from) if resumed_from else None
    summary["limits"] = stopping_limits(cfg.trainer)
    summary["seed"] = cfg.get("seed")  # vitrain.report counts distinct seeds among repeats
    summary["test"] = test  # the best checkpoint on the held-out test split
    return summary


def stopping_limits(trainer_cfg: DictConfig) -> dict:
    """The trainer settings that decide when a run is finished."""
    limits = {k: trainer_cfg.get(k) for k in ("max_epochs", "max_steps", "max_time")}
    return OmegaConf.to_container(OmegaConf.create(limits), resolve=True)


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
