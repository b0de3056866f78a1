"""Held-out evaluation and checkpoints that carry their own configuration (orchestration layer).

* :func:`setup_data_early`: read the data (class folders, annotation files, corpus) before any
  logger exists, so a data mistake stops the run before a W&B run is created.
* :func:`test_after_fit`: evaluate the best checkpoint of a finished fit on the DataModule's
  test split (``test/*`` metrics), when it has one and ``test_after_fit`` is true.
* :func:`test_checkpoint`: ``mode=test ckpt_path=...``.
* :func:`checkpoint_config` / :func:`use_checkpoint_config`: a checkpoint stores the composed
  ``model`` and ``data`` configs and choices; ``mode=eval|test|export|predict`` rebuild them from
  it, so only ``ckpt_path`` (and a ``data.root`` when the data moved) is needed. A command-line
  override that contradicts the checkpoint is one :class:`UserError`.

Like ``vitrain.run``, this module may touch Hydra / OmegaConf; tasks and data never do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from vitrain.checkpoints import load_checkpoint
from vitrain.data.base import DataModule
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
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = (ckpt.best_model_path or None) if ckpt else None
    log.info("Testing %s on the held-out test split", best or "the final weights")
    (metrics,) = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    result = {"checkpoint": best, **{k: float(v) for k, v in metrics.items()}}
    log.info("test: %s", ", ".join(f"{k}={v:.4f}" for k, v in result.items() if k.startswith("test/")))
    return result


def test_checkpoint(
    trainer: L.Trainer, task: L.LightningModule, datamodule: DataModule, ckpt_path: str, run_dir: Path
) -> float | None:
    """``mode=test``: evaluate the (already loaded) ``task`` on the data's test split and write
    ``{"mode": "test", "checkpoint": ..., "metrics": {"test/...": ...}}`` to ``run_dir/summary.json``.
    Returns the test value of the task's monitored metric."""
    datamodule.setup("test")
    if not datamodule.has_test_split:
        raise UserError(
            f"mode=test: data {type(datamodule).__name__} has no test split. Give one: {TEST_OPTIONS}; "
            "or use mode=eval to validate."
        )
    (metrics,) = trainer.test(task, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in metrics.items()}
    if trainer.is_global_zero:
        summary = {"status": "completed", "mode": "test", "checkpoint": ckpt_path, "metrics": metrics}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("test %s: %s", ckpt_path, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics.get(test_metric_name(task.monitor))


def test_metric_name(monitor: str) -> str:
    """``val/acc1`` -> ``test/acc1``."""
    return "test/" + monitor.split("/", 1)[-1]


# ------------------------------------------------------------------ configs in checkpoints
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
