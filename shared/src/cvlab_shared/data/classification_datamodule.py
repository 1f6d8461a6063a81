"""`ClassificationDataModule`: digits | cifar10 | cifar100 | tiny_imagenet | imagefolder behind one interface.

Splits follow the official calibration code (calibration.md section 4): validation is a seeded, per-class
`val_fraction` of the training set (10% = 50 images per class on Tiny-ImageNet, 5,000 on CIFAR); the test split is
the official test (CIFAR) or val (Tiny-ImageNet) split. `test_dataloader()` returns [validation, test]: the
classifier fits its post-hoc temperature on the first and reports on the second.
`batch_size` is per process, as Lightning users expect: under DDP with W processes the global batch is
W * batch_size, and W processes with batch_size B train exactly as one process with batch_size W * B (the shard
sampler gives rank r every W-th index of the same seeded permutation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from cvlab_shared.data.classification import (
    ArraySplit,
    FileSplit,
    load_digits_splits,
    read_cifar,
    read_image_folder,
    read_tiny_imagenet,
    stratified_holdout,
)
from cvlab_shared.data.samplers import ShuffledShardSampler, UnpaddedShardSampler

DATASETS = ("digits", "cifar10", "cifar100", "tiny_imagenet", "imagefolder")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "tiny_imagenet": 64, "imagefolder": 224}


class ImageDataset(Dataset):
    """Images from an array split (uint8 HWC, or float CHW used as is) or a file split, with a transform."""

    def __init__(self, source: ArraySplit | FileSplit, indices: np.ndarray, transform: Callable | None) -> None:
        self.source = source
        self.indices = np.asarray(indices)
        self.labels = source.labels[self.indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        if isinstance(self.source, FileSplit):
            from PIL import Image

            with Image.open(self.source.samples[j][0]) as image:
                item = image.convert("RGB")
        elif self.source.images.dtype == np.uint8:
            from PIL import Image

            item = Image.fromarray(self.source.images[j])
        else:
            item = torch.from_numpy(self.source.images[j])
        if self.transform is not None:
            item = self.transform(item)
        return item, int(self.labels[i])


def image_transforms(dataset: str, size: int, train: bool, augment: bool = True) -> Callable | None:
    """RandomCrop(size, padding 4) + horizontal flip for training (the papers' CIFAR/Tiny recipe), then normalise."""
    if dataset == "digits":
        return None
    mean, std = (CIFAR_MEAN, CIFAR_STD) if dataset.startswith("cifar") else (IMAGENET_MEAN, IMAGENET_STD)
    steps: list[Callable] = []
    if dataset == "imagefolder":
        steps += [T.Resize(size), T.CenterCrop(size)]
    if train and augment:
        steps += [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


class ClassificationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: str = "digits",
        data_root: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 1,
        shuffle_seed: int = 0,
        noise: float = 0.5,
        image_size: int | None = None,
        augment: bool = True,
        drop_last: bool = False,
    ) -> None:
        """Image classification data with a held-out validation split.

        Args:
            dataset: digits | cifar10 | cifar100 | tiny_imagenet | imagefolder.
            data_root: folder holding the dataset (not needed for digits, which ship with scikit-learn).
            batch_size: batch size per process (the global batch under DDP is world size x batch_size).
            num_workers: DataLoader worker processes.
            val_fraction: share of each training class held out for validation (and temperature fitting).
            split_seed: seed of the validation hold-out (and of the digits train/test split).
            shuffle_seed: seed of the per-epoch training order (epoch e uses shuffle_seed + e).
            noise: std of the fixed Gaussian input noise for digits (0 = clean digits).
            image_size: crop size; default 32 for CIFAR, 64 for Tiny-ImageNet, 224 for an image folder.
            augment: random crop with padding 4 and horizontal flip on training images.
            drop_last: drop the last incomplete training batch.
        """
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
        if dataset != "digits" and not data_root:
            raise ValueError(f"dataset {dataset!r} needs --data.data_root (the folder that holds it)")
        self.dataset = dataset
        self.data_root = data_root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.shuffle_seed = shuffle_seed
        self.noise = noise
        self.image_size = image_size or NATIVE_SIZE.get(dataset, 8)
        self.augment = augment
        self.drop_last = drop_last
        self.classes: list[str] = []
        self.splits: dict[str, ImageDataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes (known for the fixed datasets; read from disk for an image folder)."""
        fixed = {"digits": 10, "cifar10": 10, "cifar100": 100}
        if self.dataset in fixed:
            return fixed[self.dataset]
        if not self.classes:
            self.setup()
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return 1 if self.dataset == "digits" else 3

    def _read(self) -> tuple[ArraySplit | FileSplit, ArraySplit | FileSplit]:
        root = Path(self.data_root) if self.data_root else None
        if self.dataset == "digits":
            splits = load_digits_splits(noise=self.noise, split_seed=self.split_seed)
            self.classes = [str(i) for i in range(10)]
            return splits["train"], splits["test"]
        if self.dataset.startswith("cifar"):
            self.classes = [str(i) for i in range(self.num_classes)]
            return read_cifar(root, self.dataset, train=True), read_cifar(root, self.dataset, train=False)
        if self.dataset == "tiny_imagenet":
            train = read_tiny_imagenet(root, "train")
            self.classes = train.classes
            return train, read_tiny_imagenet(root, "val")
        train = read_image_folder(root, "train")
        self.classes = train.classes
        return train, read_image_folder(root, "test", classes=train.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, test = self._read()
        keep, held = stratified_holdout(train.labels, self.val_fraction, self.split_seed)
        train_tf = image_transforms(self.dataset, self.image_size, train=True, augment=self.augment)
        eval_tf = image_transforms(self.dataset, self.image_size, train=False)
        self.splits = {
            "train": ImageDataset(train, keep, train_tf),
            "val": ImageDataset(train, held, eval_tf),
            "test": ImageDataset(test, np.arange(len(test.labels)), eval_tf),
        }

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        data = self.splits["train"]
        sampler = ShuffledShardSampler(data, num_replicas=world, rank=rank, seed=self.shuffle_seed)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup()
        world, rank = self._world()
        data = self.splits[split]
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=UnpaddedShardSampler(data, num_replicas=world, rank=rank),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> list[DataLoader]:
        """[validation, test]: the first is used to fit the post-hoc temperature, the second is reported."""
        return [self._eval_loader("val"), self._eval_loader("test")]
