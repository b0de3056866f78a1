"""Exact resumption: training randomness that depends only on (seed, epoch, batch, rank).

The data side is the DataModules' job: each epoch's order depends on ``(seed, epoch)``, each
sample's augmentation on ``(seed, epoch, index)`` (and the copy number under repeated
augmentation), and the training loader's position is saved in
the checkpoint by Lightning (torchdata ``StatefulDataLoader``, see ``vitrain.data.base``). This
callback covers the rest: the global generators the network draws from (dropout, drop path, MAE
masks) are re-seeded before every training batch (:func:`vitrain.seeding.batch_seed`), so nothing
random has to be saved at all.
"""

from __future__ import annotations

import logging

import lightning as L

from vitrain.seeding import batch_seed, default_seed, seed_generators

log = logging.getLogger(__name__)


class ExactResume(L.Callback):
    """Makes a resumed run continue exactly where the checkpoint left it.

    - Before every training batch the global generators are seeded from ``(seed, epoch, batch
      index, rank)``: the dropout / drop-path / masking stream of a step does not depend on what
      ran before it (sanity checks, validation, a restart mid-epoch or at an epoch's end).
    - Lightning saves the training loader's position (``ResumableLoader.state_dict``) in the
      checkpoint, but skips loading it back when the loader was built before the checkpoint was
      restored (Lightning #20550: ``configure_optimizers`` asked for
      ``trainer.estimated_stepping_batches``, as vitrain's schedules do). ``on_train_start``
      loads such a pending state and restarts the loader's iterator from it.

    Args:
        seed: the run's seed the per-batch seeds derive from (None: the process's initial seed).
    """

    def __init__(self, seed: int | None = None) -> None:
        # an unseeded run (seed=null) still gets one fixed stream for the whole run
        self.seed = default_seed(seed)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        combined, fetcher = fit_loop._combined_loader, fit_loop._data_fetcher
        if combined is None or fetcher is None:
            return
        pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
        if pending:  # Lightning #20550: the loaders were built before the restore
            combined._load_state_dicts(pending)
            fit_loop._combined_loader_states_to_load = []
            iter(fetcher)  # the iterator made before the restore started at batch 0
            log.info("Restored the training loader's position from the checkpoint.")
        # A checkpoint from the end of a shortened epoch (limit_train_batches) holds a position
        # inside that epoch; the resumed run starts the next one. The iterator exists already
        # (made before Lightning's set_epoch), so it is made again for the right epoch.
        stale = False
        for loader in combined.flattened:
            batches = getattr(loader, "batch_sampler", None)
            if hasattr(batches, "set_epoch") and getattr(batches, "epoch", None) not in (
                None,
                trainer.current_epoch,
            ):
                batches.set_epoch(trainer.current_epoch)
                stale = True
        if stale:
            iter(fetcher)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seed_generators(batch_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank))
