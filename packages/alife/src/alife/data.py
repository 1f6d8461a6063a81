"""The datamodule of one ALIFE step over the core's VOC/ADE readers and class-incremental protocol.

ALIFE's data choices (research segmentation.md 2.2, 3.4): training labels keep background and the step's classes
(others -> 0), test labels map future classes to 0, VOC val masks come from `SegmentationClassAug`, and the two VOC
training lists (`list/train_aug.txt` read by the dataset, `ImageSets/Segmentation/train_aug.txt` read by the memory
extraction) must name the same images in the same order. With no `data_root` the core's synthetic ShapesVOC /
ShapesADE is written once into the cache.
"""

from __future__ import annotations

from pathlib import Path

from cvlab_shared.data.checks import check_folder
from cvlab_shared.data.incremental import LabelIndex, incremental_datasets, select_train, train_label_map
from cvlab_shared.data.incremental_datamodule import IncrementalSegDataModule
from cvlab_shared.data.seg_transforms import eval_transform, train_transform
from cvlab_shared.data.segmentation import (
    ADE_LAYOUT, VOC_LAYOUT, LayoutError, SegmentationDataset, SegSample, ade_samples, voc_samples,
)


def check_voc_lists(root: Path) -> None:
    """ALIFE reads `list/train_aug.txt` for training and `ImageSets/Segmentation/train_aug.txt` for the memory:
    when both exist they must list the same ids in the same order."""
    base = root if (root / "JPEGImages").exists() else next(
        (p for p in (root / "VOC2012", root / "VOCdevkit" / "VOC2012") if (p / "JPEGImages").exists()), root)
    files = [base / "list" / "train_aug.txt", base / "ImageSets" / "Segmentation" / "train_aug.txt"]
    if not all(f.exists() for f in files):
        return
    ids = [[Path(line.split()[0]).stem for line in f.read_text().splitlines() if line.strip()] for f in files]
    if ids[0] != ids[1]:
        raise LayoutError(f"{files[0]} and {files[1]} list different images (or a different order); ALIFE trains "
                          "from the first and samples its feature memory from the second: make them agree")


class ALIFEDataModule(IncrementalSegDataModule):
    """Training images of step `step` (labels of other steps' classes set to 0) and test images of the seen classes."""

    def __init__(
        self,
        dataset: str = "voc",
        data_root: str | None = None,
        task: str = "15-5",
        setting: str = "overlap",
        step: int = 0,
        crop_size: int = 512,
        eval_crop_size: int | None = 512,
        test_fill: int = 0,
        batch_size: int = 12,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        synthetic_train: int = 300,
        synthetic_val: int = 100,
        synthetic_size: int = 64,
    ) -> None:
        """
        Args:
            dataset: 'voc' (PASCAL VOC 2012, 20 classes) or 'ade' (ADE20K, 150 classes).
            data_root: the dataset folder (VOC2012 / ADEChallengeData2016 or a parent); None uses synthetic data
                (ShapesVOC with 20 classes, or ShapesADE with 30 classes).
            task: class schedule: 19-1, 15-5, 15-1 (alias 15-5s) for VOC; 100-50, 100-10, 50-50 (alias 50) for ADE.
            setting: 'overlap' (ALIFE's released setting) or 'disjoint'.
            step: the learning step (0 = base classes).
            crop_size: training random-resized-crop size (official 512).
            eval_crop_size: short-side resize + centre crop for test (official 512); None = full images.
            test_fill: label of future classes in test masks (ALIFE 0, PLOP-style).
            batch_size: training batch size per process (official 12 per GPU x 2 GPUs).
            eval_batch_size: test batch size (default: batch_size).
            num_workers: data-loading processes.
            synthetic_train: synthetic training images (only without data_root).
            synthetic_val: synthetic validation images.
            synthetic_size: synthetic image side.
        """
        super().__init__()
        self.save_hyperparameters()
        self.init_step(dataset, data_root, task, setting, step)

    def check_data(self, stage: str = "fit") -> None:
        """A given `data_root` exists and holds the VOC / ADE layout: the readers run on it (read-only; the CLI and
        the driver call this before any model is built or anything is written). The synthetic default (no
        `data_root`) is written later, in `prepare_data`."""
        if self.data_root is None:
            return
        check_folder(self.data_root, "--data.data_root", VOC_LAYOUT if self.dataset == "voc" else ADE_LAYOUT)
        self.samples()  # the readers name the missing file or folder and say what they expected

    def samples(self) -> tuple[list[SegSample], list[SegSample]]:
        """(train, val) samples: VOC `list/train_aug.txt` order (checked against ImageSets), val masks from
        SegmentationClassAug; ADE training/validation sorted."""
        root = self.root()
        if self.dataset == "voc":
            check_voc_lists(root)
            return voc_samples(root, "train_aug"), voc_samples(root, "val", mask_dir="SegmentationClassAug")
        return ade_samples(root, "training"), ade_samples(root, "validation")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        train_samples, test_samples = self.samples()
        self.train_set, self.test_set = incremental_datasets(
            train_samples, test_samples, self.task, self.step, self.setting,
            train_transform=train_transform(h.crop_size), test_transform=eval_transform(h.eval_crop_size),
            test_fill=h.test_fill,
        )
        print(f"{self.dataset} {self.task.name} {self.setting} step {self.step}: classes "
              f"{self.task.new_classes(self.step)}, {len(self.train_set)} training images, {len(self.test_set)} test "
              "images", flush=True)

    def step_train_set(self, step: int, augment: bool = True) -> SegmentationDataset:
        """The training set of an earlier step `step` with that step's labels (memory extraction samples from it)."""
        train_samples, _ = self.samples()
        index = LabelIndex.build(train_samples)
        chosen = select_train(index.presence, self.task, step, self.setting)
        transform = train_transform(self.hparams.crop_size) if augment else eval_transform(None)
        return SegmentationDataset([train_samples[i] for i in chosen], transform, train_label_map(self.task, step))
