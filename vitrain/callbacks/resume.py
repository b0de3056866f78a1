"""Exact resumption: deterministic per-epoch RNG streams, sampler position, saved RNG states."""

from __future__ import annotations

import logging
import random

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict:
    """The global RNG states (python, numpy, torch CPU, torch CUDA), as tensors and primitives.

    Only types ``torch.load(weights_only=True)`` accepts: numpy's key array becomes a tensor.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Makes a resumed run continue exactly where the checkpoint left it.

    - Every training epoch starts by re-seeding the global RNGs from ``(seed, epoch, rank)``,
      so the augmentation / dropout / drop-path stream of an epoch does not depend on what ran
      before it (sanity checks, a restart). Combined with the DataModule's epoch-seeded
      sampler, a run resumed from an end-of-epoch checkpoint is bit-identical on CPU.
    - A checkpoint saved mid-epoch (preemption) records how many batches of the epoch were
      done and the RNG states; on resume the sampler skips the samples already seen and the
      RNG states are restored before the next batch.
    """

    def __init__(self, seed: int | None = None) -> None:
        # an unseeded run (seed=null) still gets one fixed stream for the whole run
        self.seed = torch.initial_seed() % 2**31 if seed is None else int(seed)
        self._pending_rng: dict | None = None
        self._resumed_mid_epoch = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._resumed_mid_epoch:  # keep the restored stream for the rest of this epoch
            self._resumed_mid_epoch = False
            return
        seed_all(self.seed + 1_000_003 * trainer.current_epoch + 7919 * trainer.global_rank)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # "processed" counts the batch whose on_train_batch_end is saving (preemption) too
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # end of epoch: the next one starts fresh
            done = 0
        checkpoint["vitrain_resume"] = {"batches_done": int(done), "rng": rng_states()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        state = checkpoint.get("vitrain_resume")
        if not state or not state["batches_done"]:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "skip_train_batches"):
            log.warning("Resuming mid-epoch without a resumable DataModule: the epoch restarts its data.")
            return
        datamodule.skip_train_batches(state["batches_done"])
        self._pending_rng = state["rng"]
        self._resumed_mid_epoch = True
        log.info("Resuming mid-epoch: skipping %d batches already trained on.", state["batches_done"])
