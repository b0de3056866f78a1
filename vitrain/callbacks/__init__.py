"""Lightning callbacks and plugins."""

from vitrain.callbacks.checkpoint_io import AtomicCheckpointIO
from vitrain.callbacks.detections import Detections
from vitrain.callbacks.ema import EMA
from vitrain.callbacks.masks import MaskPictures
from vitrain.callbacks.metadata import CheckpointMetadata
from vitrain.callbacks.preemption import Preemption
from vitrain.callbacks.reconstructions import Reconstructions
from vitrain.callbacks.resume import ExactResume
from vitrain.callbacks.run_stats import RunStats
from vitrain.callbacks.samples import TextSamples
from vitrain.callbacks.throughput import Throughput

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointMetadata",
    "Detections",
    "EMA",
    "MaskPictures",
    "ExactResume",
    "Preemption",
    "Reconstructions",
    "RunStats",
    "TextSamples",
    "Throughput",
]
