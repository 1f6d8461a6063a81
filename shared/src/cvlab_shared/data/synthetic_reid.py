"""Deterministic synthetic person re-ID datasets written in the real on-disk layouts (Market-1501, DukeMTMC-reID,
MSMT17 v1/v2, PersonX), so tests run the real readers, samplers, evaluators and training loops in seconds.

Each identity is an appearance code (upper/lower clothing colours, a pattern, an optional bag, body height and
width) drawn as a silhouette on a camera-specific background. Every camera applies a fixed style (per-channel
gain, brightness, contrast, background colour and texture, blur). Two knobs control the cameras:

- `camera_shift`: cameras get graded levels 1/C, 2/C, ..., 1 (in a seeded random camera order) and move by
  `level * camera_shift` along one fixed "domain shift" direction (warm colour cast, darker, lower contrast,
  blur) away from the un-shifted rendering, i.e. away from a source domain written with `camera_shift=0`.
  The metadata's `camera_shift_order` lists the 0-based cameras from the least to the most shifted.
- `camera_bias`: a random per-camera style offset (mostly the background colour), independent of the grading;
  large values (about 1) make same-camera images of different people look alike (camera-biased clustering).
  At the default 0 the shift order is recovered exactly by a linear MMD (distance between mean pixel
  statistics) of each camera against a PersonX-like source written with `camera_shift=0` (tested); a bias of
  0.3 or more can swap neighbouring cameras in that order.

`write_synthetic_reid(root, layout=...)` writes under `root` and returns the metadata (also saved as
`synthetic_meta.json` in the dataset folder): dataset folder, per-camera shift levels and order, the identity
codes (for oracle-feature tests), and image counts. Same arguments and seed give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

LAYOUTS = ("market", "duke", "msmt17", "personx")
MAX_CAMERAS = {"market": 6, "duke": 8, "msmt17": 15, "personx": 6}
PERSONX_RAW_CAMERAS = (3, 4, 8, 10, 11, 12)
# Clothing palette (colour range) and background of each domain: a different palette makes a different domain.
DOMAINS = {
    "market": {"cloth": (0.10, 0.95), "background": (0.55, 0.55, 0.50), "texture": 0.08},
    "duke": {"cloth": (0.05, 0.55), "background": (0.45, 0.50, 0.45), "texture": 0.08},
    "msmt17": {"cloth": (0.05, 0.85), "background": (0.50, 0.50, 0.58), "texture": 0.10},
    "personx": {"cloth": (0.00, 1.00), "background": (0.80, 0.80, 0.80), "texture": 0.0},
}


@dataclass(frozen=True)
class CameraStyle:
    """A camera's fixed rendering style."""

    gain: tuple[float, float, float]
    brightness: float
    contrast: float
    background: tuple[float, float, float]
    blur: int
    texture_seed: int


@dataclass(frozen=True)
class Identity:
    """An identity's appearance code."""

    upper: tuple[float, float, float]
    lower: tuple[float, float, float]
    pattern: int
    bag: tuple[float, float, float] | None
    height: float
    width: float

    def code(self) -> list[float]:
        bag = self.bag if self.bag is not None else (0.0, 0.0, 0.0)
        return [*self.upper, *self.lower, *np.eye(3)[self.pattern].tolist(), *bag, self.height, self.width]


def _camera_styles(
    rng: np.random.Generator, num_cams: int, levels: np.ndarray, shift: float, bias: float, domain: dict
) -> list[CameraStyle]:
    styles = []
    for cam in range(num_cams):
        s = float(levels[cam]) * shift
        n = rng.normal(size=8)
        gain = np.exp(np.array([0.45, 0.0, -0.45]) * s + 0.08 * bias * n[:3])
        background = np.array(domain["background"]) + np.array([0.12, 0.0, -0.12]) * s + 0.35 * bias * np.tanh(n[3:6])
        styles.append(
            CameraStyle(
                gain=tuple(gain.tolist()),
                brightness=-0.2 * s + 0.04 * bias * n[6],
                contrast=float(np.exp(-0.45 * s + 0.08 * bias * n[7])),
                background=tuple(np.clip(background, 0.05, 0.95).tolist()),
                blur=int(round(1.5 * s)),
                texture_seed=int(rng.integers(1 << 30)),
            )
        )
    return styles


def _identity(rng: np.random.Generator, domain: dict) -> Identity:
    lo, hi = domain["cloth"]
    upper, lower = (tuple(rng.uniform(lo, hi, size=3).round(4).tolist()) for _ in range(2))
    bag = tuple(rng.uniform(lo, hi, size=3).round(4).tolist()) if rng.random() < 0.4 else None
    return Identity(
        upper, lower, int(rng.integers(3)), bag, float(rng.uniform(0.78, 0.95)), float(rng.uniform(0.32, 0.48))
    )


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return img
    pad = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    out = np.zeros_like(img)
    size = 2 * radius + 1
    for dy in range(size):
        for dx in range(size):
            out += pad[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out / size**2


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised row and column coordinates (y, x in [0, 1)) of an HxW image."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy / h, xx / w


def _person_parts(yy, xx, top: float, body_h: float, cx: float, half: float, spread: float) -> dict:
    """Masks of a standing person (head ellipse, torso box, two legs `spread` apart, bag slot on the right side)
    and `rel`, the height fraction of each row within the body."""
    rel = (yy - top) / body_h
    side = cx + half * 1.05
    return {
        "rel": rel,
        "head": ((xx - cx) / (half * 0.55)) ** 2 + ((rel - 0.07) / 0.07) ** 2 < 1,
        "torso": (rel >= 0.15) & (rel < 0.55) & (np.abs(xx - cx) < half),
        "legs": (rel >= 0.55) & (rel < 1.0) & (np.abs(np.abs(xx - cx) - spread) < half * 0.38),
        "bag": (rel >= 0.25) & (rel < 0.5) & (xx >= side - 0.02) & (xx < side + 0.16),
    }


def _paint_person(img: np.ndarray, identity: Identity, parts: dict, xx, head, upper, lower, bag, stripe, check) -> None:
    """Colour a person's parts in place: `stripe(upper)` / `check(upper)` give the torso pattern's second colour."""
    torso, rel = parts["torso"], parts["rel"]
    img[parts["head"]] = head
    img[torso] = upper
    if identity.pattern == 1:
        img[torso & (np.floor(rel * 24) % 2 == 0)] = stripe(upper)
    elif identity.pattern == 2:
        img[torso & ((np.floor(rel * 16) + np.floor(xx * 10)) % 2 == 0)] = check(upper)
    img[parts["legs"]] = lower
    if identity.bag is not None:
        img[parts["bag"]] = bag


def _finish(img: np.ndarray, style: CameraStyle, rng: np.random.Generator, blur: int) -> np.ndarray:
    """Camera rendering of a float RGB image: blur, contrast, brightness, colour gain, sensor noise -> uint8."""
    img = _box_blur(img, blur)
    img = (img - 0.5) * style.contrast + 0.5 + style.brightness
    img = img * np.array(style.gain, np.float32) + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def render(
    identity: Identity | None, style: CameraStyle, size: tuple[int, int], rng: np.random.Generator, domain: dict
) -> np.ndarray:
    """One HxWx3 uint8 image of `identity` (None: background only) seen by a camera with `style`."""
    yy, xx = _grid(size)
    img = np.empty((*size, 3), np.float32)
    img[:] = style.background
    if domain["texture"] > 0:
        trng = np.random.default_rng(style.texture_seed)
        freq, phase = trng.uniform(3, 9), trng.uniform(0, 6.3)
        img += (domain["texture"] * np.sin(freq * 6.3 * (yy + 0.3 * xx) + phase))[..., None]
        bar = trng.uniform(0.1, 0.9)
        img[:, np.abs(xx[0] - bar) < 0.06] *= 0.6
    if identity is not None:
        body_h = identity.height * rng.uniform(0.94, 1.04)
        top = (1 - body_h) / 2 + rng.uniform(-0.03, 0.03)
        cx = 0.5 + rng.uniform(-0.07, 0.07)
        half = identity.width / 2 * rng.uniform(0.92, 1.08)
        parts = _person_parts(yy, xx, top, body_h, cx, half, rng.uniform(0.03, 0.12))
        _paint_person(img, identity, parts, xx, (0.85, 0.68, 0.55), np.array(identity.upper, np.float32),
                      identity.lower, identity.bag, lambda u: u * 0.45, lambda u: 1 - u)
        if rng.random() < 0.15:
            y0, x0 = rng.uniform(0.2, 0.7), rng.uniform(-0.2, 0.6)
            img[(yy >= y0) & (yy < y0 + 0.25) & (xx >= x0) & (xx < x0 + 0.5)] = rng.uniform(0.1, 0.9, 3)
    return _finish(img, style, rng, style.blur)


def _market_name(pid: int, cam: int, frame: int) -> str:
    return f"{pid:04d}_c{cam + 1}s1_{frame:06d}_00.jpg" if pid >= 0 else f"-1_c{cam + 1}s1_{frame:06d}_00.jpg"


def write_synthetic_reid(
    root: str | Path,
    layout: str = "market",
    num_train_ids: int = 16,
    num_test_ids: int = 12,
    num_cams: int = 4,
    images_per_cam: int = 3,
    image_size: tuple[int, int] = (64, 32),
    camera_shift: float = 1.0,
    camera_bias: float = 0.0,
    domain: str | None = None,
    num_distractors: int = 6,
    num_junk: int = 4,
    msmt_version: int = 1,
    seed: int = 0,
    camera_sizes: Sequence[float] | None = None,
) -> dict:
    """Write a synthetic dataset in `layout` ("market", "duke", "msmt17", "personx") under `root`; see the module doc.

    Identities appear in 2-4 cameras with `images_per_cam` images each. Each test identity has one query in one
    or two of its cameras; the gallery holds all its images (so same-camera copies of queries exist). The Market
    layout adds `num_distractors` `0000` gallery images and `num_junk` `-1` gallery images; the Duke and MSMT17
    layouts add `num_distractors` gallery-only identities instead. `domain` picks the clothing palette and
    background (defaults to the layout's own). PersonX-like data has clean, texture-free backgrounds.
    `camera_sizes` (one relative size per camera) makes cameras unequal, as real ones are (MSMT17's most of all): an
    identity gets max(1, round(images_per_cam * size)) images in camera c instead of `images_per_cam`; None (the
    default) keeps every camera at `images_per_cam` and writes the same files as before the option existed.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not 2 <= num_cams <= MAX_CAMERAS[layout]:
        raise ValueError(f"num_cams must be in [2, {MAX_CAMERAS[layout]}] for layout {layout!r}, got {num_cams}")
    if camera_sizes is not None and (len(camera_sizes) != num_cams or min(camera_sizes) <= 0):
        raise ValueError(f"camera_sizes needs {num_cams} positive relative sizes (one per camera), got {camera_sizes}")
    if msmt_version not in (1, 2):
        raise ValueError(f"msmt_version must be 1 or 2, got {msmt_version}")
    dom = DOMAINS[domain or layout]
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_cams)
    levels = np.empty(num_cams)
    levels[order] = (np.arange(num_cams) + 1) / num_cams
    styles = _camera_styles(rng, num_cams, levels, camera_shift, camera_bias, dom)
    pids = rng.choice(np.arange(1, 1500), size=num_train_ids + num_test_ids, replace=False)
    train_pids, test_pids = sorted(pids[:num_train_ids].tolist()), sorted(pids[num_train_ids:].tolist())
    identities = {pid: _identity(rng, dom) for pid in train_pids + test_pids}

    sizes = [1.0] * num_cams if camera_sizes is None else camera_sizes
    per_cam = [max(1, round(images_per_cam * size)) for size in sizes]
    frame = iter(range(1, 10**6))
    # (split, pid, cam, image array)
    items: list[tuple[str, int, int, np.ndarray]] = []

    def shoot(split: str, pid: int, cam: int, identity: Identity | None) -> None:
        items.append((split, pid, cam, render(identity, styles[cam], image_size, rng, dom)))

    for split, split_pids in (("train", train_pids), ("test", test_pids)):
        for pid in split_pids:
            cams = sorted(rng.choice(num_cams, size=int(rng.integers(2, min(4, num_cams) + 1)), replace=False).tolist())
            if split == "test":
                for cam in cams[: int(rng.integers(1, 3))]:
                    shoot("query", pid, cam, identities[pid])
            for cam in cams:
                for _ in range(per_cam[cam]):
                    shoot("train" if split == "train" else "gallery", pid, cam, identities[pid])
    if layout == "market":
        for _ in range(num_distractors):
            shoot("gallery", 0, int(rng.integers(num_cams)), _identity(rng, dom))
        for _ in range(num_junk):
            shoot("gallery", -1, int(rng.integers(num_cams)), None)
    else:
        for pid in range(1501, 1501 + num_distractors):
            identities[pid] = _identity(rng, dom)
            shoot("gallery", pid, int(rng.integers(num_cams)), identities[pid])

    dataset_dir = _write_layout(Path(root), layout, items, frame, msmt_version)
    counts = {s: sum(1 for it in items if it[0] == s) for s in ("train", "query", "gallery")}
    meta = {
        "dataset_dir": str(dataset_dir),
        "layout": layout,
        "domain": domain or layout,
        "num_cams": num_cams,
        "camera_shift_levels": levels.tolist(),
        "camera_shift_order": order.tolist(),
        "camera_shift": camera_shift,
        "camera_bias": camera_bias,
        "train_pids": train_pids,
        "test_pids": test_pids,
        "identity_codes": {str(pid): ident.code() for pid, ident in identities.items()},
        "num_images": counts,
        "camera_sizes": None if camera_sizes is None else [float(v) for v in camera_sizes],
        "train_images_per_camera": [sum(1 for it in items if it[0] == "train" and it[2] == c) for c in range(num_cams)],
        "seed": seed,
    }
    (dataset_dir / "synthetic_meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def _write_layout(root: Path, layout: str, items, frames, msmt_version: int) -> Path:
    if layout in ("market", "duke", "personx"):
        name = {"market": "Market-1501-v15.09.15", "duke": "DukeMTMC-reID", "personx": "PersonX"}[layout]
        folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
        for split, pid, cam, image in items:
            f = next(frames)
            if layout == "market":
                fname = _market_name(pid, cam, f)
            elif layout == "duke":
                fname = f"{pid:04d}_c{cam + 1}_f{f:07d}.jpg"
            else:
                fname = f"{pid:04d}_c{PERSONX_RAW_CAMERAS[cam]}s1_{f:06d}.jpg"
            _save(root / name / folders[split] / fname, image)
        return root / name
    name, train_dir, test_dir = (
        ("MSMT17_V1", "train", "test") if msmt_version == 1 else ("MSMT17_V2", "mask_train_v2", "mask_test_v2")
    )
    base = root / name
    labels = {
        "train": {p: i for i, p in enumerate(sorted({pid for s, pid, _, _ in items if s == "train"}))},
        "test": {p: i for i, p in enumerate(sorted({pid for s, pid, _, _ in items if s != "train"}))},
    }
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    for n, (split, pid, cam, image) in enumerate(items):
        part = "train" if split == "train" else "test"
        label = labels[part][pid]
        rel = f"{label:04d}/{label:04d}_{n % 1000:03d}_{cam + 1:02d}_0303morning_{next(frames):04d}_0.jpg"
        _save(base / (train_dir if part == "train" else test_dir) / rel, image)
        key = ("val" if n % 5 == 0 else "train") if split == "train" else split
        lists[key].append(f"{rel} {label}")
    for key, lines in lists.items():
        (base / f"list_{key}.txt").write_text("\n".join(lines) + "\n")
    return base
