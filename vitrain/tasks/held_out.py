"""Evaluation on a held-out test split with the task's own validation code.

Every task validates in ``validation_step`` (and ``on_validation_epoch_end``), logging
``val/*`` metrics. :class:`HeldOutTest` runs that same code as Lightning's test loop and logs
the metrics as ``test/*``: ``trainer.test`` on the DataModule's ``test_dataloader`` reports
``test/acc1``, ``test/map``, ``test/loss``, ... with no second copy of each metric.
"""

from __future__ import annotations

from typing import Any

VAL, TEST = "val/", "test/"


class HeldOutTest:
    """Mixin for a ``LightningModule`` (list it before ``LightningModule`` in the bases).

    ``test_step`` is ``validation_step`` and ``on_test_epoch_end`` is
    ``on_validation_epoch_end``; while the trainer is testing, every metric logged as
    ``val/<name>`` is logged as ``test/<name>``. The validation metric objects are reused:
    Lightning resets them after each epoch, so the test epoch starts from empty states.
    """

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def log(self, name: str, value: Any, *args, **kwargs) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.testing and name.startswith(VAL):
            name = TEST + name[len(VAL) :]
        super().log(name, value, *args, **kwargs)
