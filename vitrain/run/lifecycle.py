"""The lifecycle of a run directory: a run continues where it stopped, a finished one is left as
it is, history a crashed segment logged past its checkpoint is dropped, and a preempted run
says how to continue it.

* :func:`resume_from`: the checkpoint to continue from (``ckpt_path``, or with ``resume=auto``
  the newest one of the run directory: :func:`find_latest`), or a fresh start;
* :func:`already_finished` / :func:`report_finished`: a completed run re-launched with the same
  limits does nothing;
* :func:`keep_history_until` / :func:`trim_csv_history`: ``metrics.csv`` rows logged after the
  checkpoint a run resumes from are dropped (those steps are trained again);
* :func:`resume_command`: the command line that continues a preempted run.
"""

from __future__ import annotations

import csv
import logging
import os
import shlex
import sys
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from vitrain.checkpoints import load_checkpoint
from vitrain.errors import UserError
from vitrain.run.summary import stopping_limits

log = logging.getLogger("vitrain")


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


def find_latest(checkpoint_dir: str | Path) -> Path | None:
    """The most recently written ``*.ckpt`` in ``checkpoint_dir`` (None when there is none)."""
    folder = Path(checkpoint_dir)
    files = [p for p in folder.glob("*.ckpt") if p.is_file()] if folder.is_dir() else []
    return max(files, key=lambda p: p.stat().st_mtime_ns, default=None)


def intact_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The ``*.ckpt`` files of ``checkpoint_dir`` that load, oldest first."""
    folder = Path(checkpoint_dir)
    files = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []
    intact = []
    for path in files:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001  (any unreadable file is simply not intact)
            continue
        intact.append(path)
    return intact


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
        if isinstance(logger, CSVLogger):
            dropped = trim_csv_history(Path(logger.log_dir) / "metrics.csv", step)
            if dropped:
                log.info(
                    "Dropped %d metric rows logged after step %d (they are trained again).", dropped, step
                )


def trim_csv_history(path: str | os.PathLike, last_step: int) -> int:
    """Drop the rows of ``metrics.csv`` at ``path`` logged after step ``last_step``.

    A run resumed from a checkpoint at ``last_step`` logs the later steps again; rows a crashed
    segment wrote after that checkpoint would otherwise appear twice. Returns the rows dropped.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= last_step]
    if len(kept) < len(rows):
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)
    return len(rows) - len(kept)


def resume_command(run_dir: Path) -> str:
    """The command line that continues the run in ``run_dir`` (``resume=auto`` is the default)."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "resume="))]
    args = ["python", sys.argv[0], *overrides, f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(a) for a in args)
