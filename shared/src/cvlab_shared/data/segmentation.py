"""Readers for semantic-segmentation datasets in their official on-disk layouts, and one Dataset over them.

Each reader returns a list of `SegSample(image, mask, name)` for one split; `SegmentationDataset` turns a list of
samples into `(image, mask)` pairs: image float32 [3, H, W] (after the transform), mask int64 [H, W] with 255 =
ignore. Raw label ids are mapped to train ids through a 256-entry (or 65536-entry) lookup table `label_map`.

Layouts (the folder passed as `root`; each reader also accepts the parent folder named in brackets):

* PASCAL VOC 2012 (`VOCdevkit/VOC2012`): `JPEGImages/<id>.jpg`, `SegmentationClassAug/<id>.png` (train_aug,
  10,582 images), `SegmentationClass/<id>.png` (val, 1,449 images), lists `ImageSets/Segmentation/<split>.txt` or
  `list/<split>.txt`; a list line is either an id or `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`.
  Labels 0 = background, 1-20, 255 = void.
* ADE20K (`ADEChallengeData2016`): `images/{training,validation}/ADE_*.jpg`, `annotations/.../ADE_*.png`,
  labels 0 = other, 1-150.
* Cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png`, `gtFine/<split>/<city>/*_gtFine_labelIds.png`
  (label ids mapped to the 19 train ids on the fly by `CITYSCAPES_ID_TO_TRAINID`).
* GTA5: `images/<n>.png` and `labels/<n>.png`, or the doubly nested `images/images`, `labels/labels`; labels are
  Cityscapes label ids (same mapping).
* SYNTHIA-RAND-CITYSCAPES: `RGB/<n>.png` and `GT/LABELS/<n>.png` (16-bit, class id in the first channel) or
  `GT/synthia_mapped_to_cityscapes/<n>.png` (8-bit SYNTHIA ids); mapped by `SYNTHIA_ID_TO_TRAINID`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cvlab_shared.data.checks import open_rgb

IGNORE_INDEX = 255
Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (image, mask) -> (image, mask)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
ADE_NUM_CLASSES = 151  # 0 = other, 1..150
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)  # fmt: skip
# Cityscapes label id -> train id (also GTA5, whose labels are Cityscapes ids); every other id -> 255.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
# SYNTHIA class id -> Cityscapes train id; terrain (9), truck (14) and train (16) never occur in SYNTHIA.
SYNTHIA_ID_TO_TRAINID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip
SYNTHIA_MISSING_TRAINIDS = (9, 14, 16)  # dropped for mIoU16
SYNTHIA_MIOU13_DROPPED = (3, 4, 5)  # wall, fence, pole: additionally dropped for mIoU13


@dataclass(frozen=True)
class SegSample:
    """One image and its label file; `name` is the id used in split lists and memory files."""

    image: Path
    mask: Path
    name: str


class LayoutError(FileNotFoundError):
    """A dataset folder does not have the expected layout; the message names the layout and the path looked at."""


def lookup_table(mapping: Mapping[int, int], size: int = 256, fill: int = IGNORE_INDEX) -> np.ndarray:
    """A uint8 table t with t[raw] = mapping[raw], `fill` elsewhere; index it with a label array to remap it."""
    table = np.full(size, fill, dtype=np.uint8)
    for raw, train in mapping.items():
        table[raw] = train
    return table


def read_image(path: Path) -> torch.Tensor:
    """RGB uint8 tensor [3, H, W] (a damaged file raises an error naming it)."""
    return torch.from_numpy(np.array(open_rgb(path))).permute(2, 0, 1).contiguous()


def _is_16bit_colour_png(path: Path) -> bool:
    with open(path, "rb") as file:
        header = file.read(26)
    return header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16 and header[25] in (2, 6)


def read_label(path: Path) -> np.ndarray:
    """Label ids [H, W]: palette indices or grey values (uint8/uint16), or the first channel of a 16-bit RGB PNG
    (SYNTHIA `GT/LABELS`; Pillow would truncate it to 8 bits, so torchvision's PNG decoder reads that case)."""
    if _is_16bit_colour_png(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_png, read_file

            return decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED)[0].numpy()
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(f"{path}: a label image must have one channel (mode L, P or I), got mode {image.mode}")
        return np.array(image)


def _require(path: Path, layout: str) -> Path:
    if not path.exists():
        raise LayoutError(f"missing {path}\nexpected layout: {layout}")
    return path


def _find_root(root: str | Path, marker: str, parents: Sequence[str], layout: str) -> Path:
    """`root` itself when it holds `marker`, else the first `root/<parent>` that does."""
    root = Path(root).expanduser()
    for candidate in (root, *(root / p for p in parents)):
        if (candidate / marker).exists():
            return candidate
    raise LayoutError(f"no {marker!r} under {root} (also looked in {', '.join(parents)})\nexpected layout: {layout}")


def _check_files(samples: list[SegSample], layout: str) -> list[SegSample]:
    if not samples:
        raise LayoutError(f"no samples found\nexpected layout: {layout}")
    for sample in samples:
        for path in (sample.image, sample.mask):
            _require(path, layout)
    return samples


VOC_LAYOUT = (
    "VOC2012/{JPEGImages/<id>.jpg, SegmentationClassAug/<id>.png, SegmentationClass/<id>.png, "
    "ImageSets/Segmentation/<split>.txt or list/<split>.txt}"
)


def voc_list_file(root: str | Path, split: str) -> Path:
    """The split list: `ImageSets/Segmentation/<split>.txt`, else `list/<split>.txt`."""
    root = _find_root(root, "JPEGImages", ["VOC2012", "VOCdevkit/VOC2012"], VOC_LAYOUT)
    for folder in ("ImageSets/Segmentation", "list"):
        if (root / folder / f"{split}.txt").exists():
            return root / folder / f"{split}.txt"
    raise LayoutError(
        f"no list for split {split!r}: looked for {root}/ImageSets/Segmentation/{split}.txt and "
        f"{root}/list/{split}.txt\nexpected layout: {VOC_LAYOUT}"
    )


def voc_samples(root: str | Path, split: str = "train_aug", mask_dir: str | None = None) -> list[SegSample]:
    """PASCAL VOC 2012 samples of `split`, in list order.

    Masks come from `SegmentationClassAug` for training splits and `SegmentationClass` for `val` (DKD's choice);
    pass `mask_dir` to override (ALIFE reads val masks from `SegmentationClassAug`). Lines holding two paths
    (`/JPEGImages/x.jpg /SegmentationClassAug/x.png`) are used as written unless `mask_dir` is given.
    """
    base = _find_root(root, "JPEGImages", ["VOC2012", "VOCdevkit/VOC2012"], VOC_LAYOUT)
    default_dir = "SegmentationClass" if split.startswith("val") else "SegmentationClassAug"
    samples = []
    for line in voc_list_file(base, split).read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        name = Path(fields[0]).stem
        if len(fields) >= 2 and mask_dir is None:
            image, mask = base / fields[0].lstrip("/"), base / fields[1].lstrip("/")
        else:
            image, mask = base / "JPEGImages" / f"{name}.jpg", base / (mask_dir or default_dir) / f"{name}.png"
        samples.append(SegSample(image, mask, name))
    return _check_files(samples, VOC_LAYOUT)


ADE_LAYOUT = "ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png}"
_ADE_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def ade_samples(root: str | Path, split: str = "training") -> list[SegSample]:
    """ADE20K (SceneParsing, 150 classes) samples of `split` ('training'/'train' or 'validation'/'val'), sorted."""
    if split not in _ADE_SPLITS:
        raise ValueError(f"ADE20K split must be one of {sorted(_ADE_SPLITS)}, got {split!r}")
    base = _find_root(root, "annotations", ["ADEChallengeData2016"], ADE_LAYOUT)
    folder = _ADE_SPLITS[split]
    images = sorted(_require(base / "images" / folder, ADE_LAYOUT).glob("*.jpg"))
    samples = [SegSample(p, base / "annotations" / folder / f"{p.stem}.png", p.stem) for p in images]
    return _check_files(samples, ADE_LAYOUT)


CITYSCAPES_LAYOUT = (
    "cityscapes/{leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png, "
    "gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png}"
)


def cityscapes_samples(root: str | Path, split: str = "train", label_type: str = "labelIds") -> list[SegSample]:
    """Cityscapes fine-annotation samples of `split`, sorted; `label_type` 'labelIds' (map with
    `CITYSCAPES_ID_TO_TRAINID`) or 'labelTrainIds' (precomputed train-id PNGs, use no map)."""
    base = _find_root(root, "leftImg8bit", ["cityscapes"], CITYSCAPES_LAYOUT)
    images = sorted(_require(base / "leftImg8bit" / split, CITYSCAPES_LAYOUT).glob("*/*_leftImg8bit.png"))
    samples = []
    for path in images:
        stem = path.name[: -len("_leftImg8bit.png")]
        mask = base / "gtFine" / split / path.parent.name / f"{stem}_gtFine_{label_type}.png"
        samples.append(SegSample(path, mask, f"{path.parent.name}/{path.name}"))
    return _check_files(samples, CITYSCAPES_LAYOUT)


GTA5_LAYOUT = "GTA5/{images,labels}/<n>.png (or the nested images/images, labels/labels)"


def gta5_samples(root: str | Path) -> list[SegSample]:
    """GTA5 samples sorted by name; labels are Cityscapes label ids (map with `CITYSCAPES_ID_TO_TRAINID`)."""
    base = _find_root(root, "images", ["GTA5", "gta"], GTA5_LAYOUT)
    images_dir = base / "images" / "images" if (base / "images" / "images").is_dir() else base / "images"
    labels_dir = base / "labels" / "labels" if (base / "labels" / "labels").is_dir() else base / "labels"
    samples = [SegSample(p, labels_dir / p.name, p.name) for p in sorted(images_dir.glob("*.png"))]
    return _check_files(samples, GTA5_LAYOUT)


SYNTHIA_LAYOUT = "RAND_CITYSCAPES/{RGB/<n>.png, GT/LABELS/<n>.png (16-bit) or GT/synthia_mapped_to_cityscapes/<n>.png}"


def synthia_samples(root: str | Path, labels: str = "GT/LABELS") -> list[SegSample]:
    """SYNTHIA-RAND-CITYSCAPES samples sorted by name; labels are SYNTHIA ids (map with `SYNTHIA_ID_TO_TRAINID`,
    `size=65536` for the 16-bit `GT/LABELS`)."""
    base = _find_root(root, "RGB", ["RAND_CITYSCAPES", "SYNTHIA"], SYNTHIA_LAYOUT)
    label_dir = _require(base / labels, SYNTHIA_LAYOUT)
    samples = [SegSample(p, label_dir / p.name, p.name) for p in sorted((base / "RGB").glob("*.png"))]
    return _check_files(samples, SYNTHIA_LAYOUT)


class SegmentationDataset(Dataset):
    """(image, mask) pairs: raw labels remapped through `label_map`, then the joint `transform` (see seg_transforms).

    Without a transform the image is uint8 [3, H, W]; the mask is always int64 [H, W]. `label_map` is a lookup
    table indexed by raw label (see `lookup_table`, `incremental.step_label_map`); ids past its end become 255.
    """

    def __init__(
        self,
        samples: Sequence[SegSample],
        transform: Transform | None = None,
        label_map: np.ndarray | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.samples)

    def load_mask(self, index: int) -> np.ndarray:
        """The remapped label array of sample `index` (no transform)."""
        raw = read_label(self.samples[index].mask)
        if self.label_map is None:
            return raw
        table = self.label_map
        if int(raw.max()) >= len(table):
            table = np.concatenate([table, np.full(int(raw.max()) + 1 - len(table), IGNORE_INDEX, table.dtype)])
        return table[raw]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.samples[index].image)
        mask = torch.from_numpy(self.load_mask(index).astype(np.int64))
        if image.shape[1:] != mask.shape:
            raise ValueError(
                f"image {tuple(image.shape[1:])} and mask {tuple(mask.shape)} differ: {self.samples[index]}"
            )
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map [num_colors, 3] uint8 (bits of the class id spread over R, G, B; 255 -> light)."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette
