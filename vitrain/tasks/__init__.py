"""LightningModules: how a network learns (loss, metrics, optimizer groups, schedules)."""

from vitrain.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask"]
