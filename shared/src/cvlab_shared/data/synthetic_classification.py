"""Writers of tiny synthetic CIFAR, Tiny-ImageNet and ImageFolder datasets in the real on-disk layouts.

Tests run the real readers end to end on these. Each class has its own mean colour plus noise, so a model can
learn them quickly.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cvlab_shared.data.classification import CIFAR_LAYOUTS


def _class_images(num_classes: int, per_class: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, size, size, 3): a class colour plus noise; labels in class-major order."""
    colours = rng.uniform(30, 225, size=(num_classes, 3))
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = rng.normal(0, 25, size=(len(labels), size, size, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_synthetic_cifar(
    root: str | Path, name: str = "cifar10", train_per_class: int = 10, test_per_class: int = 4, seed: int = 0
) -> Path:
    """Write `cifar-10-batches-py/` (5 train batches + test_batch) or `cifar-100-python/` (train, test)."""
    folder_name, train_files, test_files, label_key, _ = CIFAR_LAYOUTS[name]
    num_classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(seed)
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    for files, per_class in ((train_files, train_per_class), (test_files, test_per_class)):
        images, labels = _class_images(num_classes, per_class, 32, rng)
        order = rng.permutation(len(labels))
        rows = images[order].transpose(0, 3, 1, 2).reshape(len(labels), -1)
        for part, file_name in zip(np.array_split(np.arange(len(labels)), len(files)), files):
            batch = {b"data": rows[part], label_key: labels[order][part].tolist(), b"batch_label": file_name.encode()}
            with (folder / file_name).open("wb") as handle:
                pickle.dump(batch, handle)
    return folder


def _save_png_or_jpeg(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def write_synthetic_tiny_imagenet(
    root: str | Path, num_classes: int = 4, train_per_class: int = 10, val_per_class: int = 3, size: int = 64,
    seed: int = 0,
) -> Path:
    """Write `tiny-imagenet-200/` with wnids.txt, train/<wnid>/images/*.JPEG and val/ with val_annotations.txt."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{10000000 + i:08d}" for i in range(num_classes)]
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    images, labels = _class_images(num_classes, train_per_class, size, rng)
    for i, (image, label) in enumerate(zip(images, labels)):
        target = folder / "train" / wnids[label] / "images"
        target.mkdir(parents=True, exist_ok=True)
        _save_png_or_jpeg(image, target / f"{wnids[label]}_{i}.JPEG")
    images, labels = _class_images(num_classes, val_per_class, size, rng)
    lines = []
    for i, (image, label) in enumerate(zip(images, labels)):
        _save_png_or_jpeg(image, folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t{size - 1}\t{size - 1}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_synthetic_image_folder(
    root: str | Path, num_classes: int = 3, train_per_class: int = 8, test_per_class: int = 3, size: int = 32,
    seed: int = 0,
) -> Path:
    """Write `<root>/{train,test}/class_<k>/<i>.png`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = _class_images(num_classes, per_class, size, rng)
        for i, (image, label) in enumerate(zip(images, labels)):
            target = root / split / f"class_{label}"
            target.mkdir(parents=True, exist_ok=True)
            _save_png_or_jpeg(image, target / f"{i}.png")
    return root
