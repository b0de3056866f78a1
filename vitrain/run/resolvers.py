"""The ``${...:}`` resolvers of vitrain's configs, registered when ``vitrain.run`` is imported.

``conf/`` interpolates what only Python can know: the model's task decides the metric to
monitor (``${task_monitor:}``) and the packing of text data (``${task_attr:packing}``), the
machine decides the loader workers (``${loader_workers:8}``) and pinned memory (``${has_gpu:}``),
Hydra decides the sweep directory (``${sweep_dir:}``) and the launch directory (``${cwd:}``),
and ``--help`` lists the config groups (``${vitrain_config_groups:}``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vitrain.run.cli import config_groups


def task_monitor(field: str = "metric", *, _root_: DictConfig) -> str:
    """The model's task decides what to monitor: ``${task_monitor:}`` is the metric,
    ``${task_monitor:mode}`` "max" or "min", ``${task_monitor:direction}`` Optuna's "maximize" or
    "minimize"."""
    task_cls = get_class(_root_.model._target_)
    if field == "metric":
        return task_cls.monitor
    if field == "direction":
        return "maximize" if task_cls.monitor_mode == "max" else "minimize"
    return task_cls.monitor_mode


def task_attr(name: str, *, _root_: DictConfig) -> Any:
    """``${task_attr:NAME}``: a class attribute of the model's task (``data=text`` takes its packing)."""
    return getattr(get_class(_root_.model._target_), name, None)


def sweep_dir() -> str | None:
    """``${sweep_dir:}``: Hydra's sweep directory in a multirun, null in a single run (which has none)."""
    hydra_cfg = HydraConfig.get()
    return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def loader_workers(most: int) -> int:
    """``${loader_workers:N}``: N loader processes, at most as many as the CPU cores this process
    may use (a 2-core machine gets 2, not 8: torch warns beyond that)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(int(most), cores))


def has_gpu() -> bool:
    """``${has_gpu:}``: whether CUDA is available (``pin_memory`` only helps a GPU)."""
    return torch.cuda.is_available()


def register() -> None:
    """Register every resolver (again: ``replace=True``)."""
    OmegaConf.register_new_resolver("task_monitor", task_monitor, replace=True)
    OmegaConf.register_new_resolver("loader_workers", loader_workers, replace=True)
    OmegaConf.register_new_resolver("has_gpu", has_gpu, replace=True)
    OmegaConf.register_new_resolver("sweep_dir", sweep_dir, replace=True)
    # ``--help`` lists the config groups (conf/hydra/default.yaml's help template)
    OmegaConf.register_new_resolver("vitrain_config_groups", config_groups, replace=True)
    OmegaConf.register_new_resolver("task_attr", task_attr, replace=True)
    # ``${cwd:}``: the launch directory. Unlike ``${hydra:runtime.cwd}`` it also resolves before a
    # job starts, when the multirun sweeper creates ``hydra.sweep.dir`` (under ``paths.log_dir``).
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


register()
