"""SIGTERM / SIGINT / SIGUSR1 / SIGUSR2: save a checkpoint, stop cleanly, requeue under SLURM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
REQUEUE_SIGNALS = ("SIGUSR1", "SIGUSR2")  # SLURM's --signal (sbatch), submitit's timeout signal


class Preempted(Exception):
    """Training stopped on a signal after saving ``last.ckpt``; the run ends with exit code 0."""


class Preemption(L.Callback):
    """On a stop signal, finish the current batch, write ``last.ckpt`` and stop training.

    Stopping raises ``Preempted`` right after the save, so nothing (end-of-epoch validation,
    another checkpoint) runs after it: ``last.ckpt`` is exactly the state to resume from.

    The handlers are installed when training starts (after Lightning's own) and the previous
    handlers are restored when it ends. With ``requeue`` and a SLURM job id, SIGUSR1 (sent by
    ``#SBATCH --signal=SIGUSR1@90``) or SIGUSR2 (submitit's) also requeues the job; it then restarts in the same run
    directory (run_name defaults to the SLURM job id) and ``resume=auto`` continues it.
    """

    def __init__(self, checkpoint_dir: str, requeue: bool = True) -> None:
        self.checkpoint_path = Path(checkpoint_dir) / "last.ckpt"
        self.requeue = requeue
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        log.warning("Received %s: saving a checkpoint after this batch, then stopping.", self.received)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.received is None:
            return
        trainer.save_checkpoint(self.checkpoint_path)
        log.warning("Saved %s at step %d.", self.checkpoint_path, trainer.global_step)
        if self.received in REQUEUE_SIGNALS and self.requeue and "SLURM_JOB_ID" in os.environ:
            job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            job = f"{job}_{task}" if task else job
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            log.warning("Requeued SLURM job %s (exit %d).", job, result.returncode)
        raise Preempted(self.received)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)
