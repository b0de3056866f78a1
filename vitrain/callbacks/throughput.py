"""Training throughput, achieved FLOP/s and model FLOPs utilisation (MFU).

``Throughput`` times training batches in windows of ``log_every_n_steps`` batches after
``warmup_steps`` warm-up batches and logs ``perf/samples_per_s``, ``perf/tokens_per_s`` (when the
task defines ``tokens_in_batch``), ``perf/step_time_ms``, ``perf/tflops`` and ``perf/mfu``.
``summary()`` returns the means over all measured batches for the run summary.

Training FLOPs are counted once, with ``torch.utils.flop_counter.FlopCounterMode`` active during
one real training batch (the last warm-up batch): its forward, backward and optimizer step run as
usual, so nothing has to be restored, and whatever the strategy (DDP, FSDP) or the task does is
what gets counted. Like every "model FLOPs" count it holds matrix multiplies, convolutions and
attention only (element-wise work, the loss and the optimizer update are not FLOPs here); with
activation checkpointing the recomputed forward is included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

log = logging.getLogger(__name__)

# Dense (no sparsity) bf16 tensor-core peak FLOP/s of one device, from the vendors' data sheets.
# Matched in order against the lower-cased ``torch.cuda.get_device_name()``: specific names first
# ("a100" before "a10", "l40s" before "l4", "h100 pcie" before "h100").
GPU_PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("gh200", 989e12),
    ("h200", 989e12),
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("h800", 989e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("a10g", 125e12),
    ("a10", 125e12),
    ("l40s", 362e12),
    ("l40", 181e12),
    ("l4", 121e12),
    ("mi300x", 1307e12),
    ("mi250x", 383e12),
)


def gpu_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU called ``device_name`` (as ``torch.cuda.get_device_name``
    reports it, e.g. "NVIDIA H100 80GB HBM3"), or None for an unknown device."""
    name = device_name.lower()
    for key, flops in GPU_PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the CPU's fused attention kernel.

    PyTorch's registry knows the CUDA attention kernels (flash, memory-efficient, cuDNN) but not
    ``_scaled_dot_product_flash_attention_for_cpu``, so attention would be missing on CPU.
    """
    aten = torch.ops.aten
    custom = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
        custom[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return FlopCounterMode(display=False, custom_mapping=custom)


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        for item in batch:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def batch_size_of(batch: Any) -> int:
    """The number of samples in ``batch``: the leading size of its first tensor."""
    first = _first_tensor(batch)
    return int(first.shape[0]) if first is not None and first.ndim else 0


class Throughput(L.Callback):
    """Samples/s, tokens/s, step time, achieved FLOP/s and MFU of training.

    A "step" is one training batch. The first ``warmup_steps`` batches of a fit are not timed
    (the FLOPs are counted during the last of them; with ``warmup_steps=0`` and ``count_flops``
    the first batch, which is then not timed either: the counter slows it). Time then runs in
    windows of ``log_every_n_steps`` batches, from the end of the batch before the window to the
    end of its last batch, so data loading, hooks and the optimizer step are included. Time from
    the start of validation to the next training batch (validation, checkpointing) is left out.
    On CUDA the device is synchronised at window boundaries only, so timing costs no per-step
    stall.

    Rank-aware: samples/s, tokens/s and FLOP/s are global (one rank's rate times the world
    size: every rank gets the same number of equal batches); MFU divides by the peak of all
    devices together.

    Optional task hooks: ``tokens_in_batch(batch) -> int`` (enables tokens/s) and
    ``flops_per_batch(batch) -> int`` (training FLOPs of one batch on one device, used instead
    of counting, e.g. where ``FlopCounterMode`` cannot see the kernels).

    Args:
        warmup_steps: training batches not timed at the start of a fit.
        log_every_n_steps: batches per logged window; None takes the trainer's.
        peak_flops: peak FLOP/s of one device; None looks the GPU up in
            ``GPU_PEAK_BF16_FLOPS`` (MFU is then only known on a listed GPU, never on CPU).
        count_flops: count training FLOPs (tflops and MFU need them).
    """

    def __init__(
        self,
        warmup_steps: int = 3,
        log_every_n_steps: int | None = None,
        peak_flops: float | None = None,
        count_flops: bool = True,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.count_flops = count_flops
        self.flops_per_sample: float | None = None  # one device, one training forward + backward
        self.world_size = 1
        self._counter: FlopCounterMode | None = None
        self._reset()

    def _reset(self) -> None:
        self._seen = 0  # training batches of this fit
        self._window_start: float | None = None
        self._paused_at: float | None = None
        self._window = self._zero()
        self._total = self._zero()

    @staticmethod
    def _zero() -> dict[str, float]:
        return {"steps": 0, "samples": 0, "tokens": 0, "flops": 0.0, "seconds": 0.0, "excluded": 0.0}

    @property
    def _count_batch(self) -> int:
        """Index of the batch the FLOPs are counted in."""
        return max(self.warmup_steps, 1) - 1

    @property
    def _first_timed(self) -> int:
        """Index of the first timed batch."""
        return max(self.warmup_steps, 1 if self.count_flops else 0)

    # ----------------------------------------------------------------- timing helpers
    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def _close_window(self, pl_module) -> dict[str, float | None] | None:
        """End the open window, add it to the totals and return its rates (None if empty)."""
        if self._window_start is None:
            return None
        now = self._now(pl_module)
        if self._paused_at is not None:
            self._window["excluded"] += now - self._paused_at
            self._paused_at = None
        window = self._window
        window["seconds"] = now - self._window_start - window["excluded"]
        self._window_start, self._window = now, self._zero()
        if not window["steps"] or window["seconds"] <= 0:
            return None
        for key in self._total:
            self._total[key] += window[key]
        return self._rates(window)

    def _rates(self, acc: dict[str, float]) -> dict[str, float | None]:
        """Global rates of an accumulator (a window or the totals)."""
        seconds, world = acc["seconds"], self.world_size
        rates: dict[str, float | None] = {
            "samples_per_s": acc["samples"] * world / seconds,
            "tokens_per_s": acc["tokens"] * world / seconds if acc["tokens"] else None,
            "step_time_ms": 1000.0 * seconds / acc["steps"],
            "tflops": None,
            "mfu": None,
        }
        if self.flops_per_sample is not None:
            achieved = acc["flops"] * world / seconds
            rates["tflops"] = achieved / 1e12
            if self.peak_flops:
                rates["mfu"] = achieved / (self.peak_flops * world)
        return rates

    # ----------------------------------------------------------------- FLOPs
    def _stop_counting(self, batch: Any | None) -> None:
        counter, self._counter = self._counter, None
        if counter is None:
            return
        counter.__exit__(None, None, None)
        if batch is None:  # the batch failed
            return
        size = batch_size_of(batch)
        self._set_flops(counter.get_total_flops(), size, "FlopCounterMode on a training batch")

    def _set_flops(self, flops: float, size: int, how: str) -> None:
        self.flops_per_sample = flops / size if size else float(flops)
        if rank_zero_only.rank != 0:
            return
        log.info(
            "Training FLOPs per step: %.4g per device, %.4g global (%s, batch %d); peak FLOP/s per "
            "device: %s",
            flops,
            flops * self.world_size,
            how,
            size,
            f"{self.peak_flops:.4g}" if self.peak_flops else "unknown (no MFU)",
        )

    # ----------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()
        self.flops_per_sample = None
        self.world_size = max(1, trainer.world_size)
        if self.log_every_n_steps is None:
            self.log_every_n_steps = max(1, trainer.log_every_n_steps)
        if self.peak_flops is None and pl_module.device.type == "cuda":
            name = torch.cuda.get_device_name(pl_module.device)
            self.peak_flops = gpu_peak_flops(name)
            if self.peak_flops is None and rank_zero_only.rank == 0:
                log.info("Throughput: no peak FLOP/s known for %r; pass peak_flops for MFU.", name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._paused_at is not None:  # back from validation
            self._window["excluded"] += self._now(pl_module) - self._paused_at
            self._paused_at = None
        if self._seen == self._count_batch and self.count_flops and self.flops_per_sample is None:
            hook = getattr(pl_module, "flops_per_batch", None)
            if callable(hook):
                self._set_flops(float(hook(batch)), batch_size_of(batch), "the task's flops_per_batch()")
            else:
                self._counter = flop_counter()
                self._counter.__enter__()
        if self._seen == self._first_timed == 0 and self._window_start is None:
            self._window_start = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_counting(batch)
        self._seen += 1
        if self._seen == self._first_timed:  # the window opens at the end of the last untimed batch
            self._window_start = self._now(pl_module)
            return
        if self._seen <= self._first_timed or self._window_start is None:
            return
        size = batch_size_of(batch)
        self._window["steps"] += 1
        self._window["samples"] += size
        tokens = getattr(pl_module, "tokens_in_batch", None)
        if callable(tokens):
            self._window["tokens"] += int(tokens(batch))
        if self.flops_per_sample is not None:
            self._window["flops"] += self.flops_per_sample * size
        if self._window["steps"] >= self.log_every_n_steps:
            rates = self._close_window(pl_module)
            if rates is not None:
                self._log(trainer, rates)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._window_start is not None and self._paused_at is None and not trainer.sanity_checking:
            self._paused_at = self._now(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_window(pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop_counting(None)
        self._close_window(pl_module)

    @rank_zero_only
    def _log(self, trainer, rates: dict[str, float | None]) -> None:
        metrics = {f"perf/{k}": v for k, v in rates.items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def summary(self) -> dict[str, Any]:
        """Means over all measured training batches (global rates; None where unknown).

        Keys: ``samples_per_s``, ``tokens_per_s``, ``step_time_ms``, ``tflops`` (achieved
        TFLOP/s), ``mfu``, ``flops_per_step`` (global training FLOPs of a mean measured batch),
        ``peak_flops`` (one device), ``measured_steps``, ``world_size``.
        """
        total = self._total
        out: dict[str, Any] = dict.fromkeys(
            ("samples_per_s", "tokens_per_s", "step_time_ms", "tflops", "mfu")
        )
        if total["steps"] and total["seconds"] > 0:
            out.update(self._rates(total))
        per_step = None
        if self.flops_per_sample is not None and total["steps"]:
            per_step = self.flops_per_sample * total["samples"] / total["steps"] * self.world_size
        out.update(
            flops_per_step=per_step,
            peak_flops=self.peak_flops,
            measured_steps=int(total["steps"]),
            world_size=self.world_size,
        )
        return out
