"""Evaluation: the data read before any logger exists, the held-out test split after training,
and a checkpoint's validation or test metrics (``mode=eval`` / ``mode=test``).

* :func:`setup_data_early`: read the data (class folders, annotation files, corpus) before any
  logger exists, so a data mistake stops the run before a W&B run is created.
* :func:`test_after_fit`: evaluate the best checkpoint of a finished fit on the DataModule's
  test split (``test/*`` metrics), when it has one and ``test_after_fit`` is true.
* :func:`evaluate_checkpoint`: ``mode=eval|test ckpt_path=...``, with its own ``summary.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from vitrain.data.base import DataModule
from vitrain.errors import UserError
from vitrain.run.build import find_callback
from vitrain.run.summary import write_summary

log = logging.getLogger("vitrain")

TEST_OPTIONS = (
    "data.test_fraction (digits, text), data.test_size (shapes), a ROOT/test/ folder (data.test_split, "
    "ImageFolder), data.test_ann (COCO) or data.val_fraction (CIFAR: the official test images become the test split)"
)


def setup_data_early(datamodule: DataModule) -> None:
    """Run ``datamodule.setup("fit")`` now (Lightning's own call is then a no-op).

    Lightning creates the loggers' experiments (a W&B run) before it sets the data up; reading
    the data first makes a missing root, a class mismatch or a corrupt annotation file fail
    before any run is created. A DataModule with ``early_setup = False`` is skipped: litdata's
    streaming datasets take the rank and world size when created, so they must be created after
    the process group exists (their shard index is read, and checked, when they are built).
    """
    if datamodule.early_setup:
        datamodule.setup("fit")


def test_after_fit(
    cfg: DictConfig, trainer: L.Trainer, task: L.LightningModule, datamodule: DataModule
) -> dict | None:
    """Evaluate the best checkpoint of the finished fit on the test split.

    Returns ``{"checkpoint": path, "test/...": value, ...}`` for ``summary.json``, or None when
    ``test_after_fit`` is false or the data has no test split. Without a checkpoint callback
    the final weights are tested (``checkpoint`` is then null).
    """
    if not cfg.get("test_after_fit", True):
        return None
    if not datamodule.has_test_split:
        log.info("No test split in data=%s: skipping the test evaluation.", type(datamodule).__name__)
        return None
    ckpt = find_callback(trainer, ModelCheckpoint)
    best = (ckpt.best_model_path or None) if ckpt else None
    log.info("Testing %s on the held-out test split", best or "the final weights")
    result = {
        "checkpoint": best,
        **scores(trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)),
    }
    log.info("test: %s", ", ".join(f"{k}={v:.4f}" for k, v in result.items() if k.startswith("test/")))
    return result


def evaluate_checkpoint(
    trainer: L.Trainer,
    task: L.LightningModule,
    datamodule: DataModule,
    mode: str,
    ckpt_path: str,
    run_dir: Path,
) -> float | None:
    """``mode=eval`` (the validation split) or ``mode=test`` (the held-out test split) of the
    already loaded ``task``: write ``{"mode": mode, "checkpoint": ..., "metrics": {...}}`` to
    ``run_dir/summary.json`` and return the value of the task's monitored metric on that split."""
    if mode == "test":
        datamodule.setup("test")
        if not datamodule.has_test_split:
            raise UserError(
                f"mode=test: data {type(datamodule).__name__} has no test split. Give one: {TEST_OPTIONS}; "
                "or use mode=eval to validate."
            )
        metrics, monitor = (
            scores(trainer.test(task, datamodule=datamodule, verbose=False)),
            test_metric_name(task.monitor),
        )
    else:
        metrics, monitor = scores(trainer.validate(task, datamodule=datamodule, verbose=False)), task.monitor
    if trainer.is_global_zero:
        write_summary(
            run_dir, {"status": "completed", "mode": mode, "checkpoint": str(ckpt_path), "metrics": metrics}
        )
        log.info("%s %s: %s", mode, ckpt_path, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics.get(monitor)


def scores(results: list[dict]) -> dict[str, float]:
    """The metrics of Lightning's ``validate`` / ``test`` (one dataloader) as floats."""
    (metrics,) = results
    return {k: float(v) for k, v in metrics.items()}


def test_metric_name(monitor: str) -> str:
    """``val/acc1`` -> ``test/acc1``."""
    return "test/" + monitor.split("/", 1)[-1]
