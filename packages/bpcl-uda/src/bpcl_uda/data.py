"""The datamodule of one BPCL stage over the core's GTA5 / SYNTHIA / Cityscapes readers.

Source-only stage: labelled source batches. Adaptation rounds: a dict batch {"source": (image, label), "target":
(image, pseudo label)} (Lightning's CombinedLoader, "max_size_cycle"), target pseudo labels read from the round's
folder. Validation and test: Cityscapes val, the image resized to `eval_size` (official 730 x 1460) and the logits
upsampled to the full label resolution by the module. With no roots, the core's synthetic ShapesSYNTHIA (or
ShapesGTA) -> ShapesCityscapes pair is written once into the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bpcl_uda.pseudo_labels import pseudo_label_path, require_pseudo_labels
from cvlab_shared.data.cache import build_once, cache_dir
from cvlab_shared.data.checks import check_folder
from cvlab_shared.data.seg_transforms import IMAGENET_MEAN, IMAGENET_STD
from cvlab_shared.data.segmentation import IGNORE_INDEX, SYNTHIA_MISSING_TRAINIDS, SegmentationDataset, SegSample
from cvlab_shared.data.synthetic_uda import write_synthetic_uda
from cvlab_shared.data.uda import CITYSCAPES_LAYOUT, SOURCES, source_samples, target_samples

Size = Sequence[int] | None


def _normalize(image: torch.Tensor) -> torch.Tensor:
    return TF.normalize(image.float() / 255, list(IMAGENET_MEAN), list(IMAGENET_STD))


class ScaleCropFlip:
    """Training transform of the release: optional resize, random scale from `scales`, random crop (padding with 0 /
    255 if needed), horizontal flip, normalisation. Randomness from torch's generator (seeded runs repeat)."""

    def __init__(
        self,
        crop_size: Sequence[int],
        resize: Size = None,
        scales: Sequence[float] = (0.8, 1.0, 1.2),
        flip: bool = True,
    ) -> None:
        self.crop, self.resize, self.scales, self.flip = tuple(crop_size), resize, tuple(scales), flip

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.resize or image.shape[-2:]
        scale = self.scales[int(torch.randint(len(self.scales), ()))]
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = TF.resize(image, size, antialias=True)
        mask = TF.resize(mask[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
        pad_h, pad_w = max(0, self.crop[0] - size[0]), max(0, self.crop[1] - size[1])
        if pad_h or pad_w:
            image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), value=0)
            mask = torch.nn.functional.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(torch.randint(image.shape[-2] - self.crop[0] + 1, ()))
        left = int(torch.randint(image.shape[-1] - self.crop[1] + 1, ()))
        image = image[:, top : top + self.crop[0], left : left + self.crop[1]]
        mask = mask[top : top + self.crop[0], left : left + self.crop[1]]
        if self.flip and bool(torch.rand(()) < 0.5):
            image, mask = image.flip(-1), mask.flip(-1)
        return _normalize(image), mask.long()


class ResizeImage:
    """Evaluation transform: the image resized to `size` (None: kept), the label left at full resolution."""

    def __init__(self, size: Size = None) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size is not None:
            image = TF.resize(image, list(self.size), antialias=True)
        return _normalize(image), mask.long()


class BPCLDataModule(pl.LightningDataModule):
    """Source (GTA5 or SYNTHIA) and target (Cityscapes) data of one stage; `pseudo_label_dir` set = adaptation."""

    def __init__(
        self,
        source: str = "gta5",
        source_root: str | None = None,
        target_root: str | None = None,
        synthia_labels: str = "GT/LABELS",
        pseudo_label_dir: str | None = None,
        pseudo_round: int = 0,
        crop_size: tuple[int, int] = (730, 730),
        source_resize: tuple[int, int] | None = None,
        target_resize: tuple[int, int] | None = None,
        scales: tuple[float, ...] = (0.8, 1.0, 1.2),
        eval_size: tuple[int, int] | None = (730, 1460),
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 4,
        max_val_images: int | None = None,
        synthetic_source: int = 60,
        synthetic_target: int = 60,
        synthetic_val: int = 20,
        synthetic_size: tuple[int, int] = (32, 64),
        synthetic_seed: int = 0,
    ) -> None:
        """
        Args:
            source: 'gta5' (GTA5 -> Cityscapes, 19 classes) or 'synthia' (SYNTHIA -> Cityscapes, mIoU16/13).
            source_root: GTA5 folder (images/, labels/) or SYNTHIA RAND_CITYSCAPES folder; None: synthetic data.
            target_root: Cityscapes folder (leftImg8bit/, gtFine/); None: synthetic data.
            synthia_labels: 'GT/LABELS' (16-bit colour PNG) or 'GT/synthia_mapped_to_cityscapes' (8-bit ids).
            pseudo_label_dir: the round's pseudo-label folder (adaptation); None: source-only training.
            pseudo_round: the round those labels belong to (for the error message when they are missing).
            crop_size: training crop (height, width); release 730 x 730 (GTA5 config).
            source_resize: resize source images to (height, width) before scaling (release: shorter side 850).
            target_resize: the same for target training images.
            scales: random scale factors (release {0.8, 1.0, 1.2}).
            eval_size: val/test images resized to (height, width), logits upsampled to the label (release 730 x 1460).
            batch_size: source (and target) images per step and process (release 2 + 2).
            eval_batch_size: val/test images per step.
            num_workers: data-loading processes.
            max_val_images: validate on the first N val images only (None: all).
            synthetic_source: synthetic source images (only without roots).
            synthetic_target: synthetic target training images.
            synthetic_val: synthetic target validation images.
            synthetic_size: synthetic image (height, width).
            synthetic_seed: seed of the synthetic data.
        """
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.save_hyperparameters()
        self.source = source
        self.train_source: Dataset | None = None
        self.train_target: Dataset | None = None
        self.val_set: Dataset | None = None
        self.target_train_samples: list[SegSample] = []

    @property
    def excluded_classes(self) -> tuple[int, ...]:
        """Classes the source never shows, never pseudo-labelled (SYNTHIA: terrain, truck, train)."""
        return tuple(SYNTHIA_MISSING_TRAINIDS) if self.source == "synthia" else ()

    @property
    def adapting(self) -> bool:
        return self.hparams.pseudo_label_dir is not None

    def synthetic_folder(self) -> Path:
        h = self.hparams
        height, width = h.synthetic_size
        name = f"uda_{h.synthetic_source}_{h.synthetic_target}_{h.synthetic_val}_{height}x{width}_{h.synthetic_seed}"

        def write(folder: Path) -> None:
            print(f"writing the synthetic source/target pair to {cache_dir('synthetic') / name}", flush=True)
            write_synthetic_uda(
                folder, h.synthetic_source, h.synthetic_target, h.synthetic_val, height, width, h.synthetic_seed
            )

        return build_once(cache_dir("synthetic") / name, write)

    def roots(self) -> tuple[Path, Path]:
        h = self.hparams
        if h.source_root is None or h.target_root is None:
            folder = self.synthetic_folder()
            synthetic_source = folder / ("gta" if self.source == "gta5" else "synthia")
        source = Path(h.source_root) if h.source_root is not None else synthetic_source
        target = Path(h.target_root) if h.target_root is not None else folder / "cityscapes"
        return source, target

    def prepare_data(self) -> None:
        self.roots()

    def check_data(self, stage: str = "fit") -> None:
        """Before any model is built (the core CLI and `bpcl-uda train` call it): a given root must hold its layout,
        an adaptation round its pseudo labels. Read-only: the synthetic default is written later, in prepare_data."""
        h = self.hparams
        if h.target_root is not None:
            check_folder(h.target_root, "--data.target_root", CITYSCAPES_LAYOUT)
            for split in ("train", "val") if stage == "fit" else ("val",):
                target_samples(h.target_root, split)
        if h.source_root is not None:  # setup reads the source list in every stage
            layout = "GTA5 images/ + labels/, or SYNTHIA RAND_CITYSCAPES with RGB/ + GT/LABELS/"
            check_folder(h.source_root, "--data.source_root", layout)
            source_samples(self.source, h.source_root, h.synthia_labels)
        if self.adapting and stage == "fit":
            require_pseudo_labels(Path(h.pseudo_label_dir), h.pseudo_round)

    def target_train_eval_set(self) -> Dataset:
        """Target training images with the evaluation transform and their ground truth (for pseudo labelling)."""
        _, target = self.roots()
        samples, table = target_samples(target, "train")
        self.target_train_samples = samples
        return SegmentationDataset(samples, ResizeImage(self.hparams.eval_size), table)

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        h = self.hparams
        source, target = self.roots()
        samples, table = source_samples(self.source, source, h.synthia_labels)
        self.train_source = SegmentationDataset(samples, ScaleCropFlip(h.crop_size, h.source_resize, h.scales), table)
        val, val_table = target_samples(target, "val")
        if h.max_val_images:
            val = val[: h.max_val_images]
        self.val_set = SegmentationDataset(val, ResizeImage(h.eval_size), val_table)
        if self.adapting:
            folder = require_pseudo_labels(Path(h.pseudo_label_dir), h.pseudo_round)
            train, _ = target_samples(target, "train")
            pseudo = [SegSample(s.image, pseudo_label_path(folder, s.name), s.name) for s in train]
            missing = [s.mask for s in pseudo if not s.mask.exists()]
            if missing:
                raise FileNotFoundError(f"{len(missing)} pseudo labels missing in {folder}, e.g. {missing[0]}")
            self.train_target = SegmentationDataset(pseudo, ScaleCropFlip(h.crop_size, h.target_resize, h.scales))
        print(
            f"{self.source} -> cityscapes: {len(self.train_source)} source images, "
            f"{len(self.train_target) if self.train_target is not None else 0} pseudo-labelled target images, "
            f"{len(self.val_set)} target val images",
            flush=True,
        )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        h = self.hparams
        return DataLoader(
            dataset,
            batch_size=h.batch_size if train else h.eval_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        source = self._loader(self.train_source, train=True)
        if self.train_target is None:
            return source
        return CombinedLoader(
            {"source": source, "target": self._loader(self.train_target, train=True)}, "max_size_cycle"
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
