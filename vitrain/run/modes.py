"""Using a checkpoint: ``mode=eval`` (validation), ``test`` (the held-out test split), ``export``
(the bare network, loadable without vitrain) and ``predict`` (the data's predict split); each
writes the run directory's ``summary.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from vitrain.checkpoints import load_checkpoint, load_task_weights
from vitrain.run.evaluate import evaluate_checkpoint
from vitrain.run.summary import write_summary

log = logging.getLogger("vitrain")


def use_checkpoint(cfg: DictConfig, task: L.LightningModule, choices: Any, datamodule) -> float | None:
    """Load ``ckpt_path`` into ``task`` and evaluate, test, export or predict with it (``cfg.mode``).
    Returns the monitored metric's value on the evaluated split (eval, test), else None."""
    run_dir = Path(cfg.paths.output_dir)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    load_task_weights(task, checkpoint, cfg.ckpt_path, choices.get("model"))
    if cfg.mode == "export":
        export(cfg, task, checkpoint.get("vitrain", {}), run_dir)
        return None
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    if cfg.mode in ("eval", "test"):
        return evaluate_checkpoint(trainer, task, datamodule, cfg.mode, str(cfg.ckpt_path), run_dir)
    classes = checkpoint.get("vitrain", {}).get("class_names", [])
    paths, count = predict(trainer, task, datamodule, classes, run_dir)
    out = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
    write_summary(run_dir, {**record(cfg), "predictions": out, "files": count})
    return None


def record(cfg: DictConfig) -> dict:
    """The summary of a checkpoint's use, before what it wrote."""
    return {"status": "completed", "mode": cfg.mode, "checkpoint": str(cfg.ckpt_path)}


def export(cfg: DictConfig, task: L.LightningModule, meta: dict, run_dir: Path) -> None:
    """``mode=export``: the network (LoRA adapters merged) as ``run_dir/export/model.safetensors`` +
    ``config.json``; with ``export_adapter=true`` also the adapters alone, in peft's format."""
    summary = record(cfg)
    if cfg.get("export_adapter"):
        adapter = task.save_adapter(run_dir / "export" / "adapter")
        log.info("Wrote the LoRA adapters alone (peft's format) to %s", adapter)
        summary["adapter_dir"] = str(adapter)
    task.merge_adapters()  # the exported network needs no peft
    out = task.export(run_dir / "export", meta)
    log.info("Exported the network of %s to %s", cfg.ckpt_path, out)
    write_summary(run_dir, {**summary, "export_dir": str(out)})


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
