"""The base class of every task: the contract a new task fulfils.

A *task* is a LightningModule that says how a network learns: its loss, its metrics, what it
logs. Everything a task shares with the others (holding the network, building the optimizer
and its schedule, parameter groups, export, the monitored metric) lives here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from vitrain.checkpoints import export_network
from vitrain.errors import UserError
from vitrain.models import adapters
from vitrain.tasks import optim
from vitrain.tasks.held_out import HeldOutTest

OptimizerFactory = Callable[..., torch.optim.Optimizer]
"""A partial optimizer (``model.optimizer`` with ``_partial_: true``): called with param groups."""
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
"""A partial schedule (``model.scheduler``, a ``conf/scheduler`` option): called with the optimizer,
``total_steps`` and ``steps_per_epoch``; see ``vitrain.tasks.optim``."""

MONITOR_MODES = ("max", "min")


@dataclass
class LoraAdapters:
    """peft's tuner of a task's LoRA adapters, held outside the module tree (its ``model.``
    prefix must never reach a state dict); ``merge_and_unload`` needs it on export."""

    tuner: Any


class Task(HeldOutTest, L.LightningModule):
    """Base class of every vitrain task (``conf/model/*.yaml`` ``_target_``).

    **A subclass must define**

    - class attributes ``data_kind`` (the ``kind`` of the ``LightningDataModule`` it trains on:
      ``image_classification``, ``detection``, ``text``; a model paired with data of another kind
      is refused before anything is built), ``monitor`` (the validation metric that picks the
      best checkpoint and that Optuna optimises, e.g. ``"val/acc1"``) and ``monitor_mode``
      (``"max"`` or ``"min"``). They are checked when the class is defined.
    - ``__init__(self, net, optimizer, scheduler=None, ...)`` calling
      ``super().__init__(net, optimizer, scheduler)`` and then
      ``self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])``.
    - ``training_step`` (log ``train/loss``; further per-step values, such as a loss's parts,
      through :meth:`log_written_steps`) and ``validation_step`` (log ``monitor``).
      The held-out test split needs nothing more: the base class (``HeldOutTest``) runs the
      validation code in Lightning's test loop and logs its metrics as ``test/*``.

    **A subclass may override**

    - :meth:`param_groups`: the optimizer's parameter groups (default:
      ``vitrain.tasks.optim.param_groups``: no weight decay on biases, norms and the network's
      ``no_weight_decay()`` names; frozen parameters left out; layer decay when ``layer_decay``
      is set).
    - :meth:`export` (``mode=export``): write the bare network for use without vitrain
      (default: ``model.safetensors`` + ``config.json``).
    - :meth:`predict_rows` (``mode=predict``): turn ``predict_step`` outputs into CSV rows
      (default: not supported).

    **Every task can be adapted cheaply** (``model.freeze``, ``model.frozen_eval``,
    ``model.lora``; docs/adapters.md): the orchestration calls :meth:`adapt` once the network
    and its weights are built; a subclass may call :meth:`freeze` itself (the linear probe).
    Parameter names are those of the network (``blocks.0.attn.qkv.weight``, no ``net.``).

    Never override ``configure_optimizers``: :meth:`build_optimizer` applies each group's
    ``lr_scale`` and ``optim.per_step_schedule`` steps the schedule every optimizer step.

    Args:
        net: the network (a plain ``nn.Module``).
        optimizer: partial optimizer, called with :meth:`param_groups`.
        scheduler: partial schedule, or None for a constant learning rate.
        layer_decay: layer-wise learning-rate decay for the default :meth:`param_groups`
            (None: one rate for every layer).
    """

    data_kind: ClassVar[str]
    monitor: ClassVar[str]
    monitor_mode: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("data_kind", "monitor"):
            value = getattr(cls, name, None)
            if not isinstance(value, str) or not value:
                raise TypeError(
                    f"{cls.__name__}.{name} must be a non-empty string (see vitrain.tasks.base.Task)"
                )
        if getattr(cls, "monitor_mode", None) not in MONITOR_MODES:
            raise TypeError(f"{cls.__name__}.monitor_mode must be one of {MONITOR_MODES}")

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        optim.check_layer_decay(layer_decay)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.layer_decay = layer_decay
        # modules whose parameters are all frozen, kept in eval mode by train() (names in the task)
        self.frozen_eval_modules: list[str] = []
        self.lora: LoraAdapters | None = None

    def adapt(self, freeze: Sequence[str] = (), frozen_eval: bool = True, lora: dict | None = None) -> None:
        """``model.freeze`` / ``model.frozen_eval`` / ``model.lora``: add LoRA adapters to the
        network (its weights are loaded by now), then freeze the parameters ``freeze`` picks
        (frozen adapters included). Nothing to train is a :class:`UserError`."""
        settings = adapters.lora_settings(lora or {})
        if settings.r == 0 and not freeze:
            return
        if settings.r != 0:
            if self.lora is not None:
                raise UserError("model.lora: the network already has LoRA adapters.")
            self.lora = LoraAdapters(adapters.add_lora(self.net, settings))
        what = f"model.freeze={list(freeze)}" + (f" with model.lora.r={settings.r}" if settings.r else "")
        self.freeze(freeze, frozen_eval, what)

    def freeze(self, patterns: Sequence[str], frozen_eval: bool = True, what: str | None = None) -> None:
        """Freeze the parameters ``patterns`` pick (``vitrain.models.adapters.select``: fnmatch on
        the network's parameter names, ``!pattern`` spares); with ``frozen_eval``, every module
        whose parameters are all frozen runs in eval mode from now on (see :meth:`train`)."""
        adapters.freeze(self, patterns)
        adapters.check_trainable(self, what or f"model.freeze={list(patterns)}")
        self.frozen_eval_modules = adapters.frozen_modules(self) if frozen_eval else []
        self.train(self.training)

    def train(self, mode: bool = True):
        """Set train/eval mode; the modules :meth:`freeze` found all frozen stay in eval mode
        (no dropout, drop path or BatchNorm statistics), also when Lightning calls ``train()``."""
        super().train(mode)
        if mode:
            for name in self.frozen_eval_modules:
                self.get_submodule(name).eval()
        return self

    def merge_adapters(self) -> None:
        """Merge the LoRA adapters into the base weights, in fp32 (``mode=export``): the network
        then has its plain layers and key layout and computes the same function."""
        if self.lora is not None:
            self.net = adapters.merge_lora(self.lora.tuner)
            self.lora = None
            if self.frozen_eval_modules:  # the adapted layers' base_layer entries are gone
                self.frozen_eval_modules = adapters.frozen_modules(self)

    def save_adapter(self, out_dir: Path) -> Path:
        """Write the LoRA adapters alone, in peft's format (``export_adapter=true``); see
        ``vitrain.models.adapters.save_adapter``."""
        if self.lora is None:
            raise UserError(
                "export_adapter=true: this checkpoint has no LoRA adapters (it was trained with model.lora.r=0); "
                "drop export_adapter."
            )
        return adapters.save_adapter(self.net, out_dir)

    def log_written_steps(self, values: dict[str, torch.Tensor], **kwargs: Any) -> None:
        """``self.log`` each of ``values`` (per-step diagnostics beside ``train/loss``, e.g. the
        parts of a loss) only in the training steps whose logs the loggers write: every
        ``trainer.log_every_n_steps`` optimizer steps, Lightning's rule without gradient
        accumulation. A value logged in another step is overwritten unwritten, yet Lightning's
        ``self.log`` costs 0.5-1.5 ms of CPU time per call (``make bench``: the DETR step)."""
        trainer = self._trainer
        if trainer is not None and (self.global_step + 1) % max(1, trainer.log_every_n_steps):
            return
        for name, value in values.items():
            self.log(name, value, **kwargs)

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups (dicts with ``params`` and optional ``lr``,
        ``weight_decay``, ``lr_scale``, ``name``)."""
        return optim.param_groups(self.net, self.layer_decay)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over :meth:`param_groups`, each group's ``lr`` scaled by its ``lr_scale``."""
        return optim.build_optimizer(self.optimizer_factory, self.param_groups())

    def configure_optimizers(self):
        return optim.per_step_schedule(self.build_optimizer(), self.scheduler_factory, self.trainer)

    def export(self, out_dir: Path, meta: dict) -> Path:
        """Write the network (``mode=export``) to ``out_dir``; returns the folder.

        ``meta`` is the checkpoint's ``vitrain`` entry (net config, class names). Default:
        ``model.safetensors`` and ``config.json`` (see ``vitrain.checkpoints.export_network``).
        """
        return export_network({"state_dict": self.state_dict(), "vitrain": meta}, out_dir)

    def predict_rows(
        self, outputs: Sequence[Any], files: Sequence[Path], class_names: Sequence[str]
    ) -> tuple[list[str], list[list[str]]]:
        """``(header, rows)`` of ``predictions.csv`` (``mode=predict``) from the ``predict_step``
        outputs of every batch, in the order of ``files``."""
        raise UserError(
            f"mode=predict is not available for {type(self).__name__} (model._target_): it needs "
            "an image classification model."
        )
