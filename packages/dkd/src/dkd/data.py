"""The datamodule of one DKD learning step over the core's VOC/ADE readers and class-incremental protocol.

With no `data_root` it writes (once, into a cache folder) the synthetic ShapesVOC/ShapesADE data of the core in the
real on-disk layout, so every code path used on the real datasets runs on CPU in minutes.
"""

from __future__ import annotations

from cvlab_shared.data.incremental import IncrementalTask, LabelIndex, class_balanced_memory, incremental_datasets, select_train
from cvlab_shared.data.incremental_datamodule import IncrementalSegDataModule
from cvlab_shared.data.seg_transforms import eval_transform, train_transform
from cvlab_shared.data.segmentation import SegSample, ade_samples, voc_samples


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


class DKDDataModule(IncrementalSegDataModule):
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
        self.save_hyperparameters()
        self.init_step(dataset, data_root, task, setting, step)
        self.test_fill = test_fill if test_fill is not None else (0 if dataset == "voc" else 255)
        self.memory: list[int] = []

    def samples(self) -> tuple[list[SegSample], list[SegSample]]:
        """(train, val) samples of the dataset in its official lists."""
        root = self.root()
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
