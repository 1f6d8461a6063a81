"""What the datamodules of class-incremental segmentation packages (DKD, ALIFE) share: the dataset and task of one
step, the synthetic stand-in written once into the cache, and the loaders (evaluation sharded without padding, so
under DDP every test image is counted exactly once).

A package's datamodule subclasses `IncrementalSegDataModule`, keeps its own `__init__` signature (LightningCLI reads
it), calls `save_hyperparameters()` and then `init_step(...)`, and implements `samples()` and `setup()`. The
hyperparameters `batch_size`, `eval_batch_size`, `num_workers`, `synthetic_train`, `synthetic_val` and
`synthetic_size` are expected.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from cvlab_shared.data.cache import build_once, cache_dir
from cvlab_shared.data.incremental import IncrementalTask
from cvlab_shared.data.samplers import UnpaddedShardSampler
from cvlab_shared.data.synthetic_seg import write_synthetic_ade, write_synthetic_voc
from cvlab_shared.distributed import rank_and_world

DATASETS = ("voc", "ade")
SYNTHETIC_ADE_CLASSES = 30


def synthetic_root(dataset: str, num_train: int, num_val: int, size: int, seed: int = 0) -> Path:
    """The synthetic VOC / ADE stand-in, written once under `$CVLAB_CACHE/synthetic` (safe under DDP and parallel
    tests: built in a temporary folder and renamed)."""
    writer = write_synthetic_voc if dataset == "voc" else write_synthetic_ade
    folder = cache_dir("synthetic") / f"{dataset}_{num_train}_{num_val}_{size}_{seed}"
    return build_once(folder, lambda tmp: writer(tmp, num_train=num_train, num_val=num_val, size=size, seed=seed))


class IncrementalSegDataModule(pl.LightningDataModule):
    """One step of a class-incremental task over VOC / ADE (or their synthetic stand-ins); see the module doc."""

    train_set: Dataset | None = None
    test_set: Dataset | None = None

    def init_step(self, dataset: str, data_root: str | None, task: str, setting: str, step: int) -> None:
        """Check the dataset name and step, and build the task (30 classes for the synthetic ADE stand-in)."""
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        self.dataset, self.data_root, self.setting, self.step = dataset, data_root, setting, step
        num_classes: int | str = SYNTHETIC_ADE_CLASSES if data_root is None and dataset == "ade" else dataset
        self.task = IncrementalTask.from_name(task, num_classes)
        if not 0 <= step < self.task.num_steps:
            raise ValueError(f"task {task} has steps 0..{self.task.num_steps - 1}, got step {step}")
        self.train_set = self.test_set = None

    def root(self) -> Path:
        """The dataset folder: `data_root`, or the synthetic stand-in (written on first use)."""
        if self.data_root is not None:
            return Path(self.data_root)
        h = self.hparams
        return synthetic_root(self.dataset, h.synthetic_train, h.synthetic_val, h.synthetic_size)

    def prepare_data(self) -> None:
        if self.data_root is None:
            self.root()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """Training: shuffled (Lightning shards it under DDP). Evaluation: the core's unpadded shard sampler, so under
        DDP every test image is counted exactly once (torch's DistributedSampler would repeat images to even out)."""
        h = self.hparams
        rank, world = rank_and_world()
        return DataLoader(
            dataset,
            batch_size=h.batch_size if train else (h.eval_batch_size or h.batch_size),
            shuffle=train,
            sampler=None if train else UnpaddedShardSampler(dataset, num_replicas=world, rank=rank),
            drop_last=train,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
