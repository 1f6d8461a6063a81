"""Readers for image-classification datasets in their usual on-disk layouts, plus scikit-learn's bundled digits.

Every reader returns plain arrays or (path, label) lists; `ClassificationDataModule` (in `datamodule.py`) turns
them into loaders. Missing or malformed data raises `DatasetLayoutError`, which names the expected layout and the
path that was looked at.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR_LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        "cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch} (python-pickle batches, as torchvision reads)",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",
        "cifar-100-python/{train, test} (python-pickle batches, as torchvision reads)",
    ),
}
TINY_LAYOUT = (
    "tiny-imagenet-200/ with train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt "
    "(filename<TAB>wnid per line); wnids.txt optional"
)
IMAGEFOLDER_LAYOUT = "<data_root>/train/<class>/<image files> and <data_root>/test/<class>/<image files>"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetLayoutError(FileNotFoundError):
    """The data on disk does not have the expected layout."""

    def __init__(self, what: str, path: Path | str, layout: str) -> None:
        super().__init__(f"{what} at {path}; expected layout: {layout}")


@dataclass
class ArraySplit:
    """Images as a uint8 array (N, H, W, C) or float array (N, C, H, W), with int64 labels."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class FileSplit:
    """Image files with their labels."""

    samples: list[tuple[Path, int]]
    classes: list[str]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self.samples], dtype=np.int64)


def _cifar_folder(root: Path, name: str) -> Path:
    folder_name = CIFAR_LAYOUTS[name][0]
    for candidate in (root / folder_name, root):
        if candidate.is_dir() and (candidate / CIFAR_LAYOUTS[name][2][0]).is_file():
            return candidate
    raise DatasetLayoutError(f"no {name} batches found", root, f"<data_root>/{CIFAR_LAYOUTS[name][4]}")


def read_cifar(root: str | Path, name: str = "cifar10", train: bool = True) -> ArraySplit:
    """CIFAR-10/100 from the python-pickle batches (`data` (N, 3072) uint8 rows in CHW order, labels)."""
    if name not in CIFAR_LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected one of {sorted(CIFAR_LAYOUTS)}")
    folder = _cifar_folder(Path(root), name)
    _, train_files, test_files, label_key, layout = CIFAR_LAYOUTS[name]
    images, labels = [], []
    for file_name in train_files if train else test_files:
        path = folder / file_name
        if not path.is_file():
            raise DatasetLayoutError(f"missing {name} batch {file_name}", path, f"<data_root>/{layout}")
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        if b"data" not in batch or label_key not in batch:
            raise DatasetLayoutError(f"batch without b'data'/{label_key!r}", path, f"<data_root>/{layout}")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return ArraySplit(np.concatenate(images), np.concatenate(labels))


def _tiny_folder(root: Path) -> Path:
    for candidate in (root / "tiny-imagenet-200", root):
        if (candidate / "train").is_dir():
            return candidate
    raise DatasetLayoutError("no Tiny-ImageNet train/ folder", root, TINY_LAYOUT)


def read_tiny_imagenet(root: str | Path, split: str = "train") -> FileSplit:
    """Tiny-ImageNet-200: `train/<wnid>/images` and the official `val/` (labelled by `val_annotations.txt`)."""
    folder = _tiny_folder(Path(root))
    wnids_file = folder / "wnids.txt"
    if wnids_file.is_file():
        classes = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    else:
        classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if not classes:
        raise DatasetLayoutError("no class folders in train/", folder / "train", TINY_LAYOUT)
    index = {wnid: i for i, wnid in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    if split == "train":
        for wnid in classes:
            images = folder / "train" / wnid / "images"
            if not images.is_dir():
                raise DatasetLayoutError(f"missing images folder of class {wnid}", images, TINY_LAYOUT)
            samples += [(p, index[wnid]) for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    elif split == "val":
        annotations = folder / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DatasetLayoutError("missing val annotations", annotations, TINY_LAYOUT)
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DatasetLayoutError(f"line {line_no} is not 'filename<TAB>known wnid'", annotations, TINY_LAYOUT)
            samples.append((folder / "val" / "images" / fields[0], index[fields[1]]))
    else:
        raise ValueError(f"Tiny-ImageNet split must be 'train' or 'val', got {split!r}")
    if not samples:
        raise DatasetLayoutError(f"no images in the {split} split", folder / split, TINY_LAYOUT)
    missing = [p for p, _ in samples[:1] + samples[-1:] if not p.is_file()]
    if missing:
        raise DatasetLayoutError("image file listed but missing", missing[0], TINY_LAYOUT)
    return FileSplit(samples, classes)


def read_image_folder(root: str | Path, split: str = "train", classes: list[str] | None = None) -> FileSplit:
    """`<root>/<split>/<class>/<image>`; class indices follow sorted folder names (or the given `classes`)."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetLayoutError(f"no {split}/ folder", folder, IMAGEFOLDER_LAYOUT)
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = classes if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if not classes or unknown:
        raise DatasetLayoutError(f"class folders {unknown or 'none'} do not match the train classes", folder,
                                 IMAGEFOLDER_LAYOUT)
    samples = [
        (p, i)
        for i, name in enumerate(classes)
        if (folder / name).is_dir()
        for p in sorted((folder / name).iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DatasetLayoutError("no image files", folder, IMAGEFOLDER_LAYOUT)
    return FileSplit(samples, classes)


def load_digits_splits(
    noise: float = 0.0, noise_seed: int = 0, split_seed: int = 0, test_fraction: float = 0.4
) -> dict[str, ArraySplit]:
    """scikit-learn's 1,797 8x8 digits (scaled to [0, 1]) as float (N, 1, 8, 8), split stratified into train/test.

    `noise` > 0 adds fixed Gaussian noise N(0, noise^2) drawn once with `noise_seed` (calibration.md section 8: on
    clean digits cross-entropy is already calibrated; with noise 0.5 it is strongly over-confident). The split is
    fixed by `split_seed` so every run and every process sees the same samples. The validation set is held out
    from "train" by the datamodule.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    if noise > 0:
        x = x + np.random.default_rng(noise_seed).normal(0.0, noise, size=x.shape).astype(np.float32)
    x = x.reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return {"train": ArraySplit(x[idx_train], y[idx_train]), "test": ArraySplit(x[idx_test], y[idx_test])}


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of every class held out, drawn with `seed` (the official val split)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        held.append(members[:count])
        keep.append(members[count:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
