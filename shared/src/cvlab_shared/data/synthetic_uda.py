"""Synthetic stand-ins for GTA5 -> Cityscapes and SYNTHIA -> Cityscapes domain adaptation (research
segmentation.md section 7, "UDA"), written in the real layouts with the real raw label ids, so the readers' id
mappings are exercised.

Scenes share the 19 Cityscapes train ids: sky above a random horizon, building and vegetation beside each other
below it, road at the bottom, 1-3 objects of the other classes (shape = train id mod 5) on top, sometimes a void
strip at the bottom edge (ego vehicle). Domains differ in rendering only: the sources are flat Cityscapes-palette
colours with sharp edges, the target ("real") has a shifted palette and per-class stripe texture and is tinted,
blurred, brightness-jittered and noisy.

Layouts under `root` (pass the sub-folders to the readers in `segmentation`):
* `gta/{images,labels}/%05d.png`: labels are Cityscapes label ids (train id -> its label id; void -> 0);
* `cityscapes/{leftImg8bit,gtFine}/{train,val}/<city>/<city>_000000_%06d_{leftImg8bit,gtFine_labelIds}.png`;
* `synthia/RAND_CITYSCAPES/{RGB,GT/LABELS}/%07d.png`: 16-bit RGB labels with the SYNTHIA class id in the first
  channel and an instance id in the second; the scenes never contain terrain, truck or train (ids 9, 14, 16).
`synthetic_uda.json` records, per dataset and split, the pixel count of every train id (255 = void) as drawn.
Command line: `python -m cvlab_shared.data.synthetic_uda OUT [--num-source N] [--height H] [--width W]`.
"""

from __future__ import annotations

import argparse
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from cvlab_shared.data.segmentation import (
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    SYNTHIA_ID_TO_TRAINID,
    SYNTHIA_MISSING_TRAINIDS,
)
from cvlab_shared.data.synthetic_seg import shape_mask

ROAD, BUILDING, VEGETATION, SKY = 0, 2, 8, 10
THINGS = tuple(c for c in range(19) if c not in (ROAD, BUILDING, VEGETATION, SKY))
TRAIN_CITIES, VAL_CITIES = ("aachen", "bochum"), ("frankfurt",)


def write_png16(path: Path, array: np.ndarray) -> None:
    """Write a 16-bit RGB PNG from uint16 [H, W, 3] (Pillow cannot write one; SYNTHIA's labels are such files)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def draw_scene(rng: np.random.Generator, height: int, width: int, things: tuple[int, ...] = THINGS) -> np.ndarray:
    """Train-id label map [H, W] uint8 (255 = void)."""
    labels = np.full((height, width), ROAD, dtype=np.uint8)
    horizon = int(height * rng.uniform(0.25, 0.45))
    ground = int(height * rng.uniform(0.6, 0.75))
    split = int(width * rng.uniform(0.3, 0.7))
    labels[:horizon] = SKY
    labels[horizon:ground, :split] = BUILDING
    labels[horizon:ground, split:] = VEGETATION
    for cls in rng.choice(things, int(rng.integers(1, 4)), replace=False):
        radius = rng.uniform(height / 8, height / 4)
        cy = rng.uniform(max(radius, horizon), height - radius)
        cx = rng.uniform(radius, width - radius)
        region = shape_mask(int(cls) % 5, max(height, width), cy, cx, radius)[:height, :width]
        labels[region] = cls
    if rng.random() < 0.5:
        labels[-max(1, height // 16) :] = IGNORE_INDEX
    return labels


def _blur(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    height, width = image.shape[:2]
    return sum(padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)) / 9


# The "real" palette: each class colour partly rotated through the channels (R <- G <- B), so the domains differ in
# colour per class, not only by a global tint.
REAL_PALETTE = (0.6 * CITYSCAPES_PALETTE + 0.4 * CITYSCAPES_PALETTE[:, [1, 2, 0]]).astype(np.uint8)


def _texture(labels: np.ndarray) -> np.ndarray:
    """Per-class diagonal stripes (frequency and direction from the train id), a multiplicative factor [H, W, 1]."""
    height, width = labels.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ids = np.where(labels == IGNORE_INDEX, 0, labels).astype(np.float32)
    direction = np.where(ids % 2 == 0, x + y, x - y)
    return (1 + 0.15 * np.sin(2 * np.pi * direction * (0.1 + 0.02 * (ids % 7))))[..., None]


def render(rng: np.random.Generator, labels: np.ndarray, real: bool, texture: bool = True) -> np.ndarray:
    """RGB uint8: flat Cityscapes-palette colours with sharp edges (source), or (target) the shifted `REAL_PALETTE`,
    per-class stripe texture (`texture`), a random tint, blur, brightness jitter and noise."""
    palette = REAL_PALETTE if real else CITYSCAPES_PALETTE
    image = palette[np.where(labels == IGNORE_INDEX, 0, labels)].astype(np.float32) / 255
    image[labels == IGNORE_INDEX] = 0.1
    if real:
        if texture:
            image = image * _texture(labels)
        tint = np.array([0.9, 1.0, 0.8], dtype=np.float32) * rng.uniform(0.7, 1.1)
        image = _blur(image * tint + 0.08) + rng.normal(0, 0.05, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _inverse(mapping: dict[int, int]) -> np.ndarray:
    """Train id -> raw id table (void -> 0)."""
    table = np.zeros(256, dtype=np.uint16)
    for raw, train in mapping.items():
        table[train] = raw
    return table


def _counts(labels: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def _add_counts(total: dict[str, int], labels: np.ndarray) -> None:
    for key, count in _counts(labels).items():
        total[key] = total.get(key, 0) + count


def write_synthetic_uda(
    root: str | Path,
    num_source: int = 60,
    num_target_train: int = 60,
    num_target_val: int = 20,
    height: int = 32,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Write ShapesGTA, ShapesSYNTHIA and ShapesCityscapes under `root`; returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    record: dict[str, dict[str, int]] = {}
    gta_ids = _inverse(CITYSCAPES_ID_TO_TRAINID)
    record["gta"] = {}
    for index in range(1, num_source + 1):
        labels = draw_scene(rng, height, width)
        for folder, array in (
            ("images", render(rng, labels, real=False)),
            ("labels", gta_ids[labels].astype(np.uint8)),
        ):
            (root / "gta" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / "gta" / folder / f"{index:05d}.png")
        _add_counts(record["gta"], labels)
    synthia_ids = _inverse(SYNTHIA_ID_TO_TRAINID)
    synthia_things = tuple(c for c in THINGS if c not in SYNTHIA_MISSING_TRAINIDS)
    base = root / "synthia" / "RAND_CITYSCAPES"
    record["synthia"] = {}
    for index in range(num_source):
        labels = draw_scene(rng, height, width, synthia_things)
        (base / "RGB").mkdir(parents=True, exist_ok=True)
        Image.fromarray(render(rng, labels, real=False)).save(base / "RGB" / f"{index:07d}.png")
        raw = np.zeros((height, width, 3), dtype=np.uint16)
        raw[..., 0] = synthia_ids[labels]
        raw[..., 1] = rng.integers(0, 60000)
        write_png16(base / "GT" / "LABELS" / f"{index:07d}.png", raw)
        _add_counts(record["synthia"], labels)
    frame = 0
    for split, count, cities in (("train", num_target_train, TRAIN_CITIES), ("val", num_target_val, VAL_CITIES)):
        record[f"cityscapes_{split}"] = {}
        for index in range(count):
            city, frame = cities[index % len(cities)], frame + 1
            labels = draw_scene(rng, height, width)
            stem = f"{city}_000000_{frame:06d}"
            image_dir = root / "cityscapes" / "leftImg8bit" / split / city
            label_dir = root / "cityscapes" / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(rng, labels, real=True)).save(image_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(gta_ids[labels].astype(np.uint8)).save(label_dir / f"{stem}_gtFine_labelIds.png")
            _add_counts(record[f"cityscapes_{split}"], labels)
    (root / "synthetic_uda.json").write_text(json.dumps({"seed": seed, "train_id_pixels": record}, indent=1))
    return root


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write ShapesGTA, ShapesSYNTHIA and ShapesCityscapes.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--num-source", type=int, default=60)
    parser.add_argument("--num-target-train", type=int, default=60)
    parser.add_argument("--num-target-val", type=int, default=20)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    o = parser.parse_args(args)
    print(write_synthetic_uda(o.root, o.num_source, o.num_target_train, o.num_target_val, o.height, o.width, o.seed))


if __name__ == "__main__":
    main()
