"""Per-epoch validation metrics and the time inside ``fit``, for the run summary.

The statistics travel in every checkpoint (``state_dict``), so the summary of a resumed or
requeued run covers the whole run, not only the segment after the restart. Training throughput
is the ``Throughput`` callback's (``vitrain.callbacks.throughput``), checkpointed the same way.
"""

from __future__ import annotations

import time

import lightning as L
import torch


def _scalar(value) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class RunStats(L.Callback):
    """Records what ``summary.json`` reports.

    ``history``: one dict per finished validation epoch (sanity checks excluded) with the
    ``val/*`` metrics plus ``epoch`` and ``step``. ``fit_seconds``: wall time inside ``fit``
    over every segment of the run.

    All of it is saved in checkpoints and restored on resume.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._earlier_fit_seconds = 0.0  # of the segments before the checkpoint we resumed from
        self._fit_start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    @property
    def fit_seconds(self) -> float:
        segment = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self._earlier_fit_seconds + segment

    def state_dict(self) -> dict:
        return {"history": [dict(h) for h in self.history], "fit_seconds": self.fit_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self._earlier_fit_seconds = float(state_dict.get("fit_seconds", 0.0))
        self._fit_start = time.perf_counter()  # the restored total counts up to this moment

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})

    def best(self, monitor: str, mode: str) -> dict[str, float] | None:
        """The history entry with the best ``monitor`` value (``mode`` "max" or "min")."""
        scored = [h for h in self.history if monitor in h]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda h: h[monitor])
