"""Per-epoch validation metrics and training throughput, for the run summary.

The statistics travel in every checkpoint (``state_dict``), so the summary of a resumed or
requeued run covers the whole run, not only the segment after the restart.
"""

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
    ``fit_seconds``: wall time inside ``fit`` over every segment of the run.

    All of it is saved in checkpoints and restored on resume.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.train_samples = 0
        self.train_seconds = 0.0
        self._batch_start: float | None = None
        self._earlier_fit_seconds = 0.0  # of the segments before the checkpoint we resumed from
        self._fit_start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    @property
    def fit_seconds(self) -> float:
        segment = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self._earlier_fit_seconds + segment

    def state_dict(self) -> dict:
        return {
            "history": [dict(h) for h in self.history],
            "train_samples": self.train_samples,
            "train_seconds": self.train_seconds,
            "fit_seconds": self.fit_seconds,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self.train_samples = int(state_dict.get("train_samples", 0))
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self._earlier_fit_seconds = float(state_dict.get("fit_seconds", 0.0))
        self._fit_start = time.perf_counter()  # the restored total counts up to this moment

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
