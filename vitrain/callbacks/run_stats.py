"""Per-epoch validation metrics and training throughput, for the run summary."""

from __future__ import annotations

import time

import lightning as L
import torch

from vitrain.callbacks.throughput import batch_size_of


def _scalar(value) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class RunStats(L.Callback):
    """Records what ``summary.json`` reports.

    ``history``: one dict per finished validation epoch (sanity checks excluded) with the
    ``val/*`` metrics plus ``epoch`` and ``step``. Throughput counts training samples over the
    time spent inside training batches and optimizer steps (validation excluded).
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.train_samples = 0
        self.train_seconds = 0.0
        self._batch_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._batch_start is not None:
            self.train_seconds += time.perf_counter() - self._batch_start
            self.train_samples += batch_size_of(batch)  # tuples and dicts of tensors
            self._batch_start = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds else 0.0

    def best(self, monitor: str, mode: str) -> dict[str, float] | None:
        """The history entry with the best ``monitor`` value (``mode`` "max" or "min")."""
        scored = [h for h in self.history if monitor in h]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda h: h[monitor])
