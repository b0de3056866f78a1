"""LightningDataModules, datasets and transforms."""

from vitrain.data.cifar import CIFARDataModule
from vitrain.data.digits import DigitsDataModule
from vitrain.data.imagefolder import ImageFolderDataModule

__all__ = ["CIFARDataModule", "DigitsDataModule", "ImageFolderDataModule"]
