"""LightningModules: how a network learns (loss, metrics, optimizer groups, schedules)."""

from vitrain.tasks.base import Task
from vitrain.tasks.classification import ClassificationTask
from vitrain.tasks.detection import DetectionTask
from vitrain.tasks.instruction import InstructionTuningTask
from vitrain.tasks.language import CausalLMTask, MaskedLMTask
from vitrain.tasks.mae import MAETask
from vitrain.tasks.segmentation import SegmentationTask
from vitrain.tasks.tagging import TokenClassificationTask
from vitrain.tasks.text_classification import GPTSequenceClassificationTask, SequenceClassificationTask

__all__ = [
    "Task",
    "ClassificationTask",
    "MAETask",
    "DetectionTask",
    "CausalLMTask",
    "MaskedLMTask",
    "SegmentationTask",
    "SequenceClassificationTask",
    "GPTSequenceClassificationTask",
    "TokenClassificationTask",
    "InstructionTuningTask",
]
