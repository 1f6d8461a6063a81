"""The datamodule: the core's classification data (digits, CIFAR-10/100, Tiny-ImageNet, an image folder)."""

from cvlab_shared.data.classification_datamodule import ClassificationDataModule

__all__ = ["ClassificationDataModule"]
