"""LightningDataModules, datasets and transforms."""

from vitrain.data.cifar import CIFARDataModule
from vitrain.data.coco import COCODataModule
from vitrain.data.digits import DigitsDataModule
from vitrain.data.glue import GlueDataModule
from vitrain.data.imagefolder import ImageFolderDataModule
from vitrain.data.segmentation import (
    COCOMasksDataModule,
    SA1BDataModule,
    ShapesImagesDataModule,
    ShapesMasksDataModule,
)
from vitrain.data.sft import SFTDataModule
from vitrain.data.shapes import ShapesDataModule
from vitrain.data.stream import (
    StreamingDetectionDataModule,
    StreamingImageDataModule,
    StreamingTextDataModule,
)
from vitrain.data.tagging import ConllDataModule
from vitrain.data.text import TextDataModule
from vitrain.data.text_classification import TextClassificationDataModule

__all__ = [
    "CIFARDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "COCODataModule",
    "ShapesDataModule",
    "StreamingDetectionDataModule",
    "StreamingImageDataModule",
    "StreamingTextDataModule",
    "TextDataModule",
    "GlueDataModule",
    "TextClassificationDataModule",
    "ConllDataModule",
    "SFTDataModule",
    "ShapesMasksDataModule",
    "COCOMasksDataModule",
    "SA1BDataModule",
    "ShapesImagesDataModule",
]
