"""Test-only classes referenced from tests/configs (importable as ``tests.helpers``)."""

import lightning as L


class FakeTextDataModule(L.LightningDataModule):
    """A data module of another kind, to test that model/data pairing is checked."""

    kind = "text"


class SignalAtStep(L.Callback):
    """Sends ``signal`` to this process after training step ``step`` of rank ``rank`` (-1: every
    rank), as SLURM or a user would: a deterministic point to interrupt a run from the CLI
    (``+callbacks.stop._target_=tests.helpers.SignalAtStep +callbacks.stop.step=6``)."""

    def __init__(self, step: int, rank: int = -1, signal: str = "SIGTERM") -> None:
        self.step, self.rank, self.signal = step, rank, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import os
        import signal

        if trainer.global_step == self.step and self.rank in (-1, trainer.global_rank):
            os.kill(os.getpid(), getattr(signal, self.signal))
