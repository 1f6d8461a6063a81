"""The datamodule of one DKD learning step over the core's VOC/ADE readers and class-incremental protocol.

With no `data_root` it writes (once, into a cache folder) the synthetic ShapesVOC/ShapesADE data of the core in the
real on-disk layout, so every code path used on the real datasets runs on CPU in minutes.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from cvlab_shared.data.incremental import IncrementalTask, LabelIndex, class_balanced_memory, incremental_datasets, select_train
from cvlab_shared.data.samplers import UnpaddedShardSampler
from cvlab_shared.data.seg_transforms import eval_transform, train_transform
from cvlab_shared.data.segmentation import SegSample, ade_samples, voc_samples
from cvlab_shared.data.synthetic_seg import write_synthetic_ade, write_synthetic_voc
from cvlab_shared.distributed import rank_and_world

DATASETS = ("voc", "ade")
SYNTHETIC_ADE_CLASSES = 30


def synthetic_root(dataset: str, num_train: int, num_val: int, size: int, seed: int = 0) -> Path:
    """Write the synthetic stand-in once under `$CVLAB_CACHE/synthetic` (or ~/.cache/cvlab) and return its folder."""
    cache = Path(os.environ.get("CVLAB_CACHE", Path.home() / ".cache" / "cvlab")) / "synthetic"
    folder = cache / f"{dataset}_{num_train}_{num_val}_{size}_{seed}"
    done = folder / "done"
    if not done.exists():
        print(f"writing synthetic {dataset.upper()}-layout data to {folder}", flush=True)
        writer = write_synthetic_voc if dataset == "voc" else write_synthetic_ade
        writer(folder, num_train=num_train, num_val=num_val, size=size, seed=seed)
        done.touch()
    return folder


def memory_indices(
    samples: list[SegSample], task: IncrementalTask, step: int, setting: str, size: int, seed: int = 0
) -> list[int]:
    """DKD-M replay memory of step t: `size` class-balanced images from the training sets of steps 0..t-1.

    Each candidate's label set is the classes of the step that trained on it (what was annotated then); SSUL's
    greedy class-balanced selection over the old classes picks the images (`class_balanced_memory`).
    """
    if step == 0 or size <= 0:
        return []
    index = LabelIndex.build(samples)
    candidates: dict[int, list[int]] = {}
    for previous in range(step):
        chosen = select_train(index.presence, task, previous, setting)
        for image, labels in zip(chosen.tolist(), index.label_sets(chosen, task.new_classes(previous))):
            candidates.setdefault(image, []).extend(labels)
    images = sorted(candidates)
    picked = class_balanced_memory([candidates[i] for i in images], task.old_classes(step), size, seed)
    return [images[i] for i in picked]


class DKDDataModule(pl.LightningDataModule):
    """Training images of step `step` (labels of other steps' classes set to 0) and test images of the classes seen."""

    def __init__(
        self,
        dataset: str = "voc",
        data_root: str | None = None,
        task: str = "15-5",
        setting: str = "overlap",
        step: int = 0,
        memory_size: int = 0,
        crop_size: int = 512,
        eval_crop_size: int | None = 512,
        test_fill: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        synthetic_train: int = 300,
        synthetic_val: int = 100,
        synthetic_size: int = 64,
        verify: bool = False,
    ) -> None:
        """
        Args:
            dataset: 'voc' (PASCAL VOC 2012, 20 classes) or 'ade' (ADE20K, 150 classes).
            data_root: the dataset folder (VOC2012 / ADEChallengeData2016 or a parent); None uses synthetic data
                (ShapesVOC with 20 classes, or ShapesADE with 30 classes).
            task: class schedule, e.g. 15-1, 15-5, 19-1, 10-1, 5-3 (VOC), 100-50, 100-10, 50-50 (ADE).
            setting: 'overlap' or 'disjoint'.
            step: the learning step (0 = base classes).
            memory_size: DKD-M replay memory (VOC 100, ADE 300); 0 = plain DKD.
            crop_size: training random-resized-crop size.
            eval_crop_size: short-side resize + centre crop for val/test (official 512); None = full images.
            test_fill: label of future classes in test masks; None = the official choice (VOC 0, ADE 255).
            batch_size: training batch size per device.
            eval_batch_size: val/test batch size (default: batch_size).
            num_workers: data-loading processes.
            synthetic_train: synthetic training images (only without data_root).
            synthetic_val: synthetic validation images.
            synthetic_size: synthetic image side.
            verify: before training, decode every image and label of a real dataset (finds a truncated or damaged
                file, named, before any model is built).
        """
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        self.save_hyperparameters()
        self.dataset, self.data_root, self.setting, self.step = dataset, data_root, setting, step
        if data_root is None and dataset == "ade":
            num_classes: int | str = SYNTHETIC_ADE_CLASSES
        else:
            num_classes = dataset
        self.task = IncrementalTask.from_name(task, num_classes)
        if not 0 <= step < self.task.num_steps:
            raise ValueError(f"task {task} has steps 0..{self.task.num_steps - 1}, got step {step}")
        self.test_fill = test_fill if test_fill is not None else (0 if dataset == "voc" else 255)
        self.train_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.memory: list[int] = []

    def _root(self) -> Path:
        if self.data_root is not None:
            return Path(self.data_root)
        h = self.hparams
        return synthetic_root(self.dataset, h.synthetic_train, h.synthetic_val, h.synthetic_size)

    def prepare_data(self) -> None:
        if self.data_root is None:
            self._root()

    def samples(self) -> tuple[list[SegSample], list[SegSample]]:
        """(train, val) samples of the dataset in its official lists."""
        root = self._root()
        if self.dataset == "voc":
            return voc_samples(root, "train_aug"), voc_samples(root, "val")
        return ade_samples(root, "training"), ade_samples(root, "validation")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        train_samples, test_samples = self.samples()
        self.memory = memory_indices(train_samples, self.task, self.step, self.setting, h.memory_size)
        self.train_set, self.test_set = incremental_datasets(
            train_samples,
            test_samples,
            self.task,
            self.step,
            self.setting,
            train_transform=train_transform(h.crop_size),
            test_transform=eval_transform(h.eval_crop_size),
            test_fill=self.test_fill,
            memory=self.memory,
        )
        print(
            f"{self.dataset} {self.task.name} {self.setting} step {self.step}: classes {self.task.new_classes(self.step)}, "
            f"{len(self.train_set)} training images ({len(self.memory)} from memory), {len(self.test_set)} test images",
            flush=True,
        )

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
