"""Synthetic stand-ins for PASCAL VOC and ADE20K, written in the real on-disk layouts (research segmentation.md
section 7), so the real readers, task definitions and filters run unchanged in tests.

ShapesVOC: 20 object classes, each a fixed (shape, hue, stripe frequency) triple (5 shapes x 4 hues), on smooth
noise background 0. An image holds 1-3 objects: the first class is uniform, the others are drawn from a fixed
co-occurrence table (with probability `cooccurrence`: classes c+1 and c+10, wrapping) else uniformly, so a known
share of images mixes base, new and future classes and overlapped and disjoint splits differ. A 2-pixel void band
(255) separates regions, as in VOC. Layout: `VOCdevkit/VOC2012/{JPEGImages, SegmentationClassAug (train and val,
grey PNG), SegmentationClass (val, palette PNG like VOC), ImageSets/Segmentation/{train_aug.txt (DKD line format),
val.txt}, list/{train_aug.txt, val.txt} (ids)}`.

ShapesADE: `num_classes` classes of which the first `num_stuff` are "stuff" filling the two halves of the image
(split by a random wavy line), the others shapes on top; class 0 ("other") only in an occasional small patch, no
void band. Layout: `ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_%08d.{jpg,png}`.
Task names scale down: `IncrementalTask.from_name("20-10", 30)`.

Both write `synthetic.json` beside the data: per split, every image id with the sorted label values of its mask
(the generator's record, independent of the PNG reader) for tests of the label index and filters.
`cached_synthetic("voc")` writes a data set once into the cache and returns its folder on later calls.
Command line: `python -m cvlab_shared.data.synthetic_seg OUT [--ade] [--num-train N] [--num-val N] [--size S]`.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from cvlab_shared.data.cache import build_once, cache_dir
from cvlab_shared.data.segmentation import IGNORE_INDEX, voc_palette

NUM_SHAPES = 5


def class_colour(cls: int, num_classes: int) -> np.ndarray:
    """RGB in [0, 1] of class `cls`: hue by `(cls-1) // 5` over the hue wheel, shape index is `(cls-1) % 5`."""
    hues = math.ceil(num_classes / NUM_SHAPES)
    hue = ((cls - 1) // NUM_SHAPES) / hues
    return np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9))


def shape_mask(shape: int, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Boolean [size, size] mask of a square, disc, triangle, diamond or cross centred at (cy, cx)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if shape == 0:
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == 1:
        return dx**2 + dy**2 <= radius**2
    if shape == 2:
        return (np.abs(dy) <= radius) & (np.abs(dx) <= (dy + radius) / 2)
    if shape == 3:
        return np.abs(dx) + np.abs(dy) <= radius * 1.2
    arm = radius / 3
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))


def _texture(cls: int, size: int) -> np.ndarray:
    """Stripes whose frequency and angle depend on the class: brightness factor in [0.7, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frequency = 0.15 + 0.1 * ((cls - 1) % 3)
    angle = (cls % 4) * math.pi / 4
    return 0.85 + 0.15 * np.sin(frequency * (xx * math.cos(angle) + yy * math.sin(angle)))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.uniform(0.25, 0.6, (4, 4, 3)).astype(np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255


def void_band(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label (a 2-pixel band on every region boundary)."""
    band = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    band[1:] |= vertical
    band[:-1] |= vertical
    band[:, 1:] |= horizontal
    band[:, :-1] |= horizontal
    return band


def _object_classes(rng: np.random.Generator, first: int, low: int, high: int, cooccurrence: float) -> list[int]:
    """1-3 classes in [low, high]: the first given, the others co-occurring with it (c+1, c+10, wrapping)."""
    span = high - low + 1
    classes = [first]
    for _ in range(rng.choice([0, 1, 2], p=[0.4, 0.35, 0.25])):
        if rng.random() < cooccurrence:
            offset = int(rng.choice([1, 10]))
            classes.append(low + (first - low + offset) % span)
        else:
            classes.append(int(rng.integers(low, high + 1)))
    return classes


def _draw_objects(
    rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, classes: list[int], num_classes: int
) -> None:
    size = labels.shape[0]
    for cls in classes:
        radius = rng.uniform(size / 9, size / 4.5)
        cy, cx = rng.uniform(radius, size - radius, 2)
        mask = shape_mask((cls - 1) % NUM_SHAPES, size, cy, cx, radius)
        image[mask] = (class_colour(cls, num_classes) * _texture(cls, size)[..., None])[mask]
        labels[mask] = cls


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    noisy = image + rng.normal(0, 0.03, image.shape)
    return (np.clip(noisy, 0, 1) * 255).astype(np.uint8)


def draw_voc_image(
    rng: np.random.Generator, size: int, num_classes: int = 20, cooccurrence: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """One ShapesVOC (image uint8 [H, W, 3], mask uint8 [H, W] with 0 background, 1..num_classes, 255 void)."""
    image = _background(rng, size)
    labels = np.zeros((size, size), dtype=np.uint8)
    first = int(rng.integers(1, num_classes + 1))
    _draw_objects(rng, image, labels, _object_classes(rng, first, 1, num_classes, cooccurrence), num_classes)
    labels[void_band(labels)] = IGNORE_INDEX
    return _finish(rng, image), labels


def draw_ade_image(
    rng: np.random.Generator, size: int, num_classes: int = 30, num_stuff: int = 10, cooccurrence: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """One ShapesADE (image, mask with 0 = other, stuff 1..num_stuff filling the image, things above)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase, tilt = rng.uniform(0, 2 * math.pi), rng.uniform(-0.5, 0.5)
    upper = yy < size / 2 + tilt * (xx - size / 2) + size / 10 * np.sin(xx / size * 2 * math.pi + phase)
    labels = np.zeros((size, size), dtype=np.uint8)
    image = _background(rng, size)
    for region, cls in zip((upper, ~upper), rng.choice(np.arange(1, num_stuff + 1), 2, replace=False), strict=True):
        labels[region] = cls
        image[region] = (class_colour(int(cls), num_classes) * 0.6 * _texture(int(cls), size)[..., None])[region]
    if rng.random() < 0.3:
        y, x = rng.integers(0, size - size // 6, 2)
        labels[y : y + size // 6, x : x + size // 6] = 0
        image[y : y + size // 6, x : x + size // 6] = 0.5
    first = int(rng.integers(num_stuff + 1, num_classes + 1))
    things = _object_classes(rng, first, num_stuff + 1, num_classes, cooccurrence)
    _draw_objects(rng, image, labels, things, num_classes)
    return _finish(rng, image), labels


def _save_mask(labels: np.ndarray, path: Path, palette: bool) -> None:
    image = Image.fromarray(labels, mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path)


def write_synthetic_voc(
    root: str | Path, num_train: int = 300, num_val: int = 100, size: int = 64, seed: int = 0, cooccurrence: float = 0.5
) -> Path:
    """Write ShapesVOC under `root/VOCdevkit/VOC2012` and return that folder (pass it to `voc_samples`)."""
    base = Path(root) / "VOCdevkit" / "VOC2012"
    folders = {name: base / name for name in ("JPEGImages", "SegmentationClassAug", "SegmentationClass")}
    for folder in (*folders.values(), base / "ImageSets" / "Segmentation", base / "list"):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    record: dict[str, dict[str, list[int]]] = {"train_aug": {}, "val": {}}
    for split, count, year in (("train_aug", num_train, 2007), ("val", num_val, 2008)):
        for index in range(count):
            name = f"{year}_{index:06d}"
            image, labels = draw_voc_image(rng, size, cooccurrence=cooccurrence)
            Image.fromarray(image).save(folders["JPEGImages"] / f"{name}.jpg", quality=95)
            _save_mask(labels, folders["SegmentationClassAug"] / f"{name}.png", palette=False)
            if split == "val":
                _save_mask(labels, folders["SegmentationClass"] / f"{name}.png", palette=True)
            record[split][name] = np.unique(labels).tolist()
    train_ids, val_ids = list(record["train_aug"]), list(record["val"])
    dkd_lines = [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in train_ids]
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(dkd_lines) + "\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val_ids) + "\n")
    (base / "list" / "train_aug.txt").write_text("\n".join(train_ids) + "\n")
    (base / "list" / "val.txt").write_text("\n".join(val_ids) + "\n")
    (base / "synthetic.json").write_text(json.dumps({"num_classes": 20, "seed": seed, "labels": record}))
    return base


def write_synthetic_ade(
    root: str | Path,
    num_train: int = 300,
    num_val: int = 100,
    size: int = 64,
    seed: int = 0,
    num_classes: int = 30,
    num_stuff: int = 10,
) -> Path:
    """Write ShapesADE under `root/ADEChallengeData2016` and return that folder (pass it to `ade_samples`)."""
    base = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(seed)
    record: dict[str, dict[str, list[int]]] = {"training": {}, "validation": {}}
    for split, count, prefix in (("training", num_train, "ADE_train"), ("validation", num_val, "ADE_val")):
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for index in range(1, count + 1):
            name = f"{prefix}_{index:08d}"
            image, labels = draw_ade_image(rng, size, num_classes, num_stuff)
            Image.fromarray(image).save(base / "images" / split / f"{name}.jpg", quality=95)
            _save_mask(labels, base / "annotations" / split / f"{name}.png", palette=False)
            record[split][name] = np.unique(labels).tolist()
    payload = {"num_classes": num_classes, "num_stuff": num_stuff, "seed": seed, "labels": record}
    (base / "synthetic.json").write_text(json.dumps(payload))
    return base


def cached_synthetic(
    dataset: str = "voc", num_train: int = 300, num_val: int = 100, size: int = 64, seed: int = 0
) -> Path:
    """A synthetic data set written once under `$CVLAB_CACHE/synthetic` (or ~/.cache/cvlab) and reused; safe
    under DDP. "voc": ShapesVOC (pass the folder to `voc_samples`); "ade": ShapesADE (`ade_samples`); "uda":
    ShapesGTA/SYNTHIA/Cityscapes (`synthetic_uda`; `num_train` images per source and for the target's train split,
    `num_val` for its val split, `size` x `2 size` pixels)."""
    from cvlab_shared.data.synthetic_uda import write_synthetic_uda  # it builds on this module

    writers = {
        "voc": lambda tmp: write_synthetic_voc(tmp, num_train, num_val, size, seed),
        "ade": lambda tmp: write_synthetic_ade(tmp, num_train, num_val, size, seed),
        "uda": lambda tmp: write_synthetic_uda(tmp, num_train, num_train, num_val, size, 2 * size, seed),
    }
    if dataset not in writers:
        raise ValueError(f"dataset must be one of {sorted(writers)}, got {dataset!r}")
    return build_once(cache_dir("synthetic") / f"{dataset}_{num_train}_{num_val}_{size}_{seed}", writers[dataset])


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write ShapesVOC (or ShapesADE) in the real dataset layout.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--ade", action="store_true", help="write the ADE20K-like variant")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    writer = write_synthetic_ade if options.ade else write_synthetic_voc
    print(writer(options.root, options.num_train, options.num_val, options.size, options.seed))


if __name__ == "__main__":
    main()
