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

from vitrain.errors import UserError

log = logging.getLogger(__name__)

# Dense (no sparsity) peak FLOP/s of one device by compute type, from the vendors' data sheets:
# ``bf16`` (= fp16) and ``tf32`` on the tensor cores, ``fp32`` without them (the vector units).
# Matched in order against the lower-cased ``torch.cuda.get_device_name()``: specific names first
# ("a100" before "a10", "l40s" before "l4", "h100 pcie" before "h100").
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("gh200", {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("h200", {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("h100 pcie", {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    ("h100 nvl", {"bf16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    ("h100", {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),  # SXM ("NVIDIA H100 80GB HBM3")
    ("h800", {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("a100", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("a800", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("a10g", {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    ("a10", {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    ("l40s", {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("l40", {"bf16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12}),
    ("l4", {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    ("mi300x", {"bf16": 1307e12, "tf32": 654e12, "fp32": 163e12}),
    ("mi250x", {"bf16": 383e12, "fp32": 95.7e12}),
)


def compute_type(precision: str | None) -> str | None:
    """The matmul type of a Lightning ``precision`` (``trainer.precision``): ``bf16`` for bf16 and
    fp16 (same peak), ``tf32`` for 32-bit when ``torch.get_float32_matmul_precision()`` allows
    TF32 (``high`` / ``medium``), else ``fp32``; None for others (fp64, fp8)."""
    text = str(precision or "32-true")
    if text.startswith(("bf16", "16")):
        return "bf16"
    if text.startswith("32"):
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return None


def gpu_peak_flops(device_name: str, kind: str | None = "bf16") -> float | None:
    """Dense peak FLOP/s of the GPU called ``device_name`` (as ``torch.cuda.get_device_name``
    reports it, e.g. "NVIDIA H100 80GB HBM3") for the compute type ``kind`` (``bf16``, ``tf32``,
    ``fp32``; see :func:`compute_type`), or None for an unknown device or type. A GPU without
    TF32 (MI250X) runs 32-bit matmuls at its fp32 rate."""
    name = device_name.lower()
    for key, peaks in GPU_PEAK_FLOPS:
        if key in name:
            if kind == "tf32" and "tf32" not in peaks:
                kind = "fp32"
            return peaks.get(kind) if kind else None
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

    This is vitrain's one definition of training throughput: ``summary.json`` reports
    :meth:`summary` (``throughput``, and its ``samples_per_s`` as ``train_samples_per_s``). The
    totals travel in every checkpoint (``state_dict``), so the summary of a resumed or requeued
    run covers every segment (each segment's first ``warmup_steps`` batches are not timed).

    Rank-aware: samples/s, tokens/s and FLOP/s are global (one rank's rate times the world
    size: every rank gets the same number of equal batches); MFU divides by the peak of all
    devices together.

    MFU divides by the dense peak of the compute type the run's precision uses
    (``trainer.precision``: bf16 / fp16 mixed or true -> the bf16 peak; 32-true -> the TF32 peak
    when ``torch.set_float32_matmul_precision`` allows TF32, else the fp32 peak), looked up by GPU
    name in ``GPU_PEAK_FLOPS`` as Lightning's ``get_available_flops`` does by dtype; the log says
    which peak.

    Optional task hooks: ``tokens_in_batch(batch) -> int`` (enables tokens/s) and
    ``flops_per_batch(batch) -> int`` (training FLOPs of one batch on one device, used instead
    of counting, e.g. where ``FlopCounterMode`` cannot see the kernels).

    Args:
        warmup_steps: training batches not timed at the start of a fit (a whole number >= 0).
        log_every_n_steps: batches per logged window (>= 1); None takes the trainer's.
        peak_flops: peak FLOP/s of one device (> 0); None looks the GPU up by name and precision
            (MFU is then only known on a listed GPU, never on CPU).
        count_flops: count training FLOPs (tflops and MFU need them).
    """

    def __init__(
        self,
        warmup_steps: int = 3,
        log_every_n_steps: int | None = None,
        peak_flops: float | None = None,
        count_flops: bool = True,
    ) -> None:
        check_setting("warmup_steps", warmup_steps, minimum=0, default="3")
        if log_every_n_steps is not None:
            check_setting("log_every_n_steps", log_every_n_steps, minimum=1, default="null: the trainer's")
        if peak_flops is not None and not (isinstance(peak_flops, int | float) and peak_flops > 0):
            raise UserError(
                f"callbacks.throughput.peak_flops={peak_flops!r}: must be the device's peak FLOP/s (> 0, "
                "e.g. 989e12), or null to look the GPU up."
            )
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.peak_source = "callbacks.throughput.peak_flops" if peak_flops is not None else None
        self._given_peak = peak_flops
        self.count_flops = count_flops
        self.flops_per_sample: float | None = None  # one device, one training forward + backward
        self.world_size = 1
        self._counter: FlopCounterMode | None = None
        self._device: torch.device | None = None
        self._total = self._zero()  # global sums over every fit and resumed segment (checkpointed)
        self._reset()

    def _reset(self) -> None:
        """The state of one fit (the totals are kept)."""
        self._seen = 0  # training batches of this fit
        self._window_start: float | None = None
        self._paused_at: float | None = None
        self._window = self._zero()

    @staticmethod
    def _zero() -> dict[str, float]:
        """Accumulated steps, samples, tokens, FLOPs, seconds and available FLOPs (peak x seconds
        x devices, the denominator of MFU); a window holds one rank's counts, the totals global ones."""
        return {
            "steps": 0,
            "samples": 0,
            "tokens": 0,
            "flops": 0.0,
            "seconds": 0.0,
            "excluded": 0.0,
            "available": 0.0,
        }

    @property
    def _count_batch(self) -> int:
        """Index of the batch the FLOPs are counted in."""
        return max(self.warmup_steps, 1) - 1

    @property
    def _first_timed(self) -> int:
        """Index of the first timed batch."""
        return max(self.warmup_steps, 1 if self.count_flops else 0)

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The totals, with the open window's batches so far (a checkpoint written mid-window
        holds every batch timed before it; the window itself goes on)."""
        totals = dict(self._total)
        if self._window_start is not None and self._window["steps"] and self._device is not None:
            now = self._now_on(self._device)
            paused = now - self._paused_at if self._paused_at is not None else 0.0
            seconds = now - self._window_start - self._window["excluded"] - paused
            if seconds > 0:
                for key, value in self._window_sums(self._window, seconds).items():
                    totals[key] += value
        return {"totals": totals}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        totals = state_dict.get("totals", {})
        self._total = {key: type(value)(totals.get(key, value)) for key, value in self._zero().items()}

    # ----------------------------------------------------------------- timing helpers
    @staticmethod
    def _now_on(device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def _now(self, pl_module) -> float:
        return self._now_on(pl_module.device)

    def _window_sums(self, window: dict[str, float], seconds: float) -> dict[str, float]:
        """What a window of ``seconds`` adds to the (global) totals."""
        world = self.world_size
        out = {key: window[key] * world for key in ("samples", "tokens", "flops")}
        out.update(
            steps=window["steps"], seconds=seconds, available=(self.peak_flops or 0.0) * seconds * world
        )
        return out

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
        for key, value in self._window_sums(window, window["seconds"]).items():
            self._total[key] += value
        window["available"] = (self.peak_flops or 0.0) * window["seconds"]
        return self._rates(window, self.world_size)

    def _rates(self, acc: dict[str, float], world: int) -> dict[str, float | None]:
        """Global rates of an accumulator: a window (one rank's counts, ``world`` ranks) or the
        totals (global counts, ``world=1``)."""
        seconds = acc["seconds"]
        rates: dict[str, float | None] = {
            "samples_per_s": acc["samples"] * world / seconds,
            "tokens_per_s": acc["tokens"] * world / seconds if acc["tokens"] else None,
            "step_time_ms": 1000.0 * seconds / acc["steps"],
            "tflops": None,
            "mfu": None,
        }
        if acc["flops"]:
            rates["tflops"] = acc["flops"] * world / seconds / 1e12
            if acc["available"]:
                rates["mfu"] = acc["flops"] / acc["available"]
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
            "Training FLOPs per step: %.4g per device, %.4g global (%s, batch %d); MFU against %s",
            flops,
            flops * self.world_size,
            how,
            size,
            f"{self.peak_flops:.4g} FLOP/s per device ({self.peak_source})"
            if self.peak_flops
            else "nothing (no MFU)",
        )

    def _find_peak(self, trainer, pl_module) -> None:
        """The peak FLOP/s of one device for this run's precision (unless given)."""
        self.peak_flops, self.peak_source = self._given_peak, None
        if self._given_peak is not None:
            self.peak_source = "callbacks.throughput.peak_flops"
            return
        if pl_module.device.type != "cuda":
            return
        name = torch.cuda.get_device_name(pl_module.device)
        kind = compute_type(getattr(trainer, "precision", None))
        self.peak_flops = gpu_peak_flops(name, kind)
        if self.peak_flops is not None:
            self.peak_source = f"dense {kind} peak of {name}, trainer.precision={trainer.precision}"
        elif rank_zero_only.rank == 0:
            log.info(
                "Throughput: no %s peak FLOP/s known for %r (trainer.precision=%s); pass "
                "callbacks.throughput.peak_flops for MFU.", kind, name, trainer.precision,
            )  # fmt: skip

    # ----------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()
        self.flops_per_sample = None
        self.world_size = max(1, trainer.world_size)
        self._device = pl_module.device
        if self.log_every_n_steps is None:
            self.log_every_n_steps = max(1, trainer.log_every_n_steps)
        self._find_peak(trainer, pl_module)

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
        """Means over all measured training batches of every fit and resumed segment (global
        rates; None where unknown).

        Keys: ``samples_per_s``, ``tokens_per_s``, ``step_time_ms``, ``tflops`` (achieved
        TFLOP/s), ``mfu``, ``flops_per_step`` (global training FLOPs of a mean measured batch),
        ``peak_flops`` (one device) and ``peak`` (which peak: the compute type, the GPU and the
        precision, or the given value), ``measured_steps``, ``world_size``.
        """
        total = self._total
        out: dict[str, Any] = dict.fromkeys(
            ("samples_per_s", "tokens_per_s", "step_time_ms", "tflops", "mfu")
        )
        if total["steps"] and total["seconds"] > 0:
            out.update(self._rates(total, 1))
        out.update(
            flops_per_step=total["flops"] / total["steps"] if total["flops"] and total["steps"] else None,
            peak_flops=self.peak_flops,
            peak=self.peak_source,
            measured_steps=int(total["steps"]),
            world_size=self.world_size,
        )
        return out


def check_setting(key: str, value: Any, minimum: int, default: str) -> None:
    """Raise :class:`UserError` unless ``value`` is a whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(
            f"callbacks.throughput.{key}={value!r}: must be a whole number >= {minimum} (default {default})."
        )
