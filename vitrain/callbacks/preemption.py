"""SIGTERM / SIGINT / SIGUSR1 / SIGUSR2: every rank stops at the same step, one checkpoint, requeue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
REQUEUE_SIGNALS = ("SIGUSR1", "SIGUSR2")  # SLURM's --signal (sbatch), submitit's timeout signal
_REQUEUE = 1000  # added to a requeue signal's number when ranks agree (the largest code wins)


class Preempted(Exception):
    """Training stopped on a signal after saving ``last.ckpt``; the run ends with exit code 0."""


def stop_code(received: str | None) -> int:
    """A rank's vote: 0 (go on), the signal number, or the number + 1000 for a requeue signal."""
    if received is None:
        return 0
    number = int(signal.Signals[received])
    return number + _REQUEUE if received in REQUEUE_SIGNALS else number


def agree(code: int, device: torch.device) -> int:
    """The largest ``code`` over all ranks (``code`` itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return code
    votes = torch.tensor([code], dtype=torch.int64, device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return int(votes.item())


class Preemption(L.Callback):
    """On a stop signal to any rank, every rank finishes the same batch, ``last.ckpt`` is written
    once and training stops.

    After each training batch the ranks agree (one all-reduce of a small integer) whether any of
    them received a signal, so all of them stop after the same step and meet in the same
    checkpoint barrier: none waits in a collective the others never reach. With gradient
    accumulation they stop after the next optimizer step. Stopping raises
    ``Preempted`` right after the save, so nothing (end-of-epoch validation, another checkpoint)
    runs after it: ``last.ckpt`` is exactly the state to resume from, and ``received`` names the
    signal on every rank.

    The handlers are installed when training starts (after Lightning's own) and the previous
    handlers are restored when it ends. With ``requeue`` and a SLURM job id, SIGUSR1 (sent by
    ``#SBATCH --signal=SIGUSR1@90``) or SIGUSR2 (submitit's) to any rank also makes rank zero
    requeue the job (once); it then restarts in the same run directory (run_name defaults to the
    SLURM job id) and ``resume=auto`` continues it.

    Args:
        checkpoint_dir: folder the stop writes ``last.ckpt`` to.
        requeue: under SLURM, requeue the job on SIGUSR1/SIGUSR2.
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
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not (stepped or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            return  # mid-accumulation: stop after the optimizer step, so no gradient is lost
        code = agree(stop_code(self.received), trainer.strategy.root_device)
        if code == 0:
            return
        requeue = code > _REQUEUE
        if self.received is None:
            self.received = signal.Signals(code % _REQUEUE).name
            log.warning("Another rank received %s: stopping after this batch.", self.received)
        trainer.save_checkpoint(self.checkpoint_path)  # every rank takes part, rank zero writes
        if trainer.is_global_zero:
            log.warning("Saved %s at step %d.", self.checkpoint_path, trainer.global_step)
            if requeue and self.requeue and "SLURM_JOB_ID" in os.environ:
                self._requeue()
        raise Preempted(self.received)

    @staticmethod
    def _requeue() -> None:
        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        job = f"{job}_{task}" if task else job
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        log.warning("Requeued SLURM job %s (exit %d).", job, result.returncode)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)
