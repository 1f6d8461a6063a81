"""Deterministic synthetic visible-infrared re-ID data in the real SYSU-MM01 and RegDB layouts.

Each identity is the core's appearance code (`synthetic_reid.Identity`: clothing colours, pattern, bag, height and
width). Visible cameras draw it in colour with a camera style (`synthetic_reid.render`); infrared cameras draw a
single-channel "thermal" map of the same identity: skin bright, clothing at an identity-specific temperature that
does not follow its colour (the colour is gone), the stripe/check pattern as a faint texture, a cool bag, body
height and width kept, on a dark low-texture background. Every image has its own pose and crop jitter, so a
visible and an infrared image of one person are slightly misaligned. SYSU cameras 2 (visible) and 3 (infrared)
share a scene (the same background structure), as in the real indoor room.

`write_synthetic_sysu(root)` writes `SYSU-MM01/camK/PPPP/NNNN.jpg` + `exp/{train_id,val_id,test_id}.txt` and the
official evaluation's 10 gallery permutations per camera and identity, `exp/rand_perm_cam.mat`;
`write_synthetic_regdb(root)` writes `RegDB/{Visible,Thermal}/PID/*.bmp` + `idx/{train,test}_{visible,thermal}_
{1..10}.txt`. Same arguments and seed give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cvlab_shared.data.synthetic_reid import (
    DOMAINS,
    CameraStyle,
    Identity,
    _box_blur,
    _grid,
    _identity,
    _paint_person,
    _person_parts,
    render,
)
from cvlab_shared.data.vi_reid import SYSU_PERMUTATION_FILE, random_sysu_permutations, write_sysu_permutations

# Scene of each SYSU camera: cameras 2 and 3 are the same indoor room.
SYSU_SCENE = {1: 0, 2: 1, 3: 1, 4: 2, 5: 3, 6: 4}


def _visible_style(rng: np.random.Generator, scene_seed: int) -> CameraStyle:
    n = rng.normal(size=8)
    background = np.clip(np.array(DOMAINS["market"]["background"]) + 0.12 * np.tanh(n[:3]), 0.05, 0.95)
    return CameraStyle(
        gain=tuple(np.exp(0.06 * n[3:6]).tolist()),
        brightness=float(0.04 * n[6]),
        contrast=float(np.exp(0.08 * n[7])),
        background=tuple(background.tolist()),
        blur=0,
        texture_seed=scene_seed,
    )


def _thermal_levels(identity: Identity) -> tuple[float, float, float]:
    """Identity-specific temperatures of upper clothing, lower clothing and bag: a fixed non-linear mix of the
    colour code, so they carry identity but no colour (two colours of equal luminance can differ here)."""
    code = np.array(identity.code()[:6])
    upper = 0.45 + 0.4 * (0.5 + 0.5 * np.sin(7.0 * code[0] + 3.0 * code[1] - 5.0 * code[2]))
    lower = 0.40 + 0.4 * (0.5 + 0.5 * np.sin(-4.0 * code[3] + 6.0 * code[4] + 2.0 * code[5]))
    return float(upper), float(lower), 0.25


def render_thermal(identity: Identity, scene_seed: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One HxW uint8 "thermal" image of `identity` in the scene `scene_seed` (same body model as `render`)."""
    h, w = size
    yy, xx = _grid(size)
    img = np.full((h, w), 0.18, np.float32)
    trng = np.random.default_rng(scene_seed)
    freq, phase = trng.uniform(3, 9), trng.uniform(0, 6.3)
    img += 0.03 * np.sin(freq * 6.3 * (yy + 0.3 * xx) + phase)
    bar = trng.uniform(0.1, 0.9)
    img[:, np.abs(xx[0] - bar) < 0.06] += 0.08
    upper_t, lower_t, bag_t = _thermal_levels(identity)
    body_h = identity.height * rng.uniform(0.94, 1.04)
    top = (1 - body_h) / 2 + rng.uniform(-0.03, 0.03)
    cx = 0.5 + rng.uniform(-0.07, 0.07)
    half = identity.width / 2 * rng.uniform(0.92, 1.08)
    parts = _person_parts(yy, xx, top, body_h, cx, half, rng.uniform(0.03, 0.12))
    _paint_person(img, identity, parts, xx, 0.95, upper_t, lower_t, bag_t, lambda u: u * 0.85, lambda u: u * 0.85)
    img = _box_blur(img[..., None], 1)[..., 0] + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(image).save(path, quality=92)
    else:
        Image.fromarray(image).save(path)


def write_synthetic_sysu(
    root: str | Path,
    num_train_ids: int = 24,
    num_val_ids: int = 8,
    num_test_ids: int = 16,
    images_per_cam: int = 4,
    image_size: tuple[int, int] = (64, 32),
    seed: int = 0,
) -> dict:
    """Write a synthetic SYSU-MM01 under `root` and return its metadata (also in `SYSU-MM01/synthetic_meta.json`).

    Every identity appears in one indoor visible camera (1 or 2), one outdoor visible camera (4 or 5), sometimes a
    third visible camera, and in infrared camera 3, 6 or both, with `images_per_cam` images per camera.
    `exp/rand_perm_cam.mat` holds 10 random permutations of every (camera, identity) image list (its own seeded
    stream, so the images do not depend on it), in the official file's layout.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "SYSU-MM01"
    scene_seeds = {s: int(rng.integers(1 << 30)) for s in sorted(set(SYSU_SCENE.values()))}
    styles = {c: _visible_style(rng, scene_seeds[SYSU_SCENE[c]]) for c in (1, 2, 4, 5)}
    total = num_train_ids + num_val_ids + num_test_ids
    pids = sorted(rng.choice(np.arange(1, 534), size=total, replace=False).tolist())
    order = rng.permutation(total)
    train = sorted(pids[i] for i in order[:num_train_ids])
    val = sorted(pids[i] for i in order[num_train_ids : num_train_ids + num_val_ids])
    test = sorted(pids[i] for i in order[num_train_ids + num_val_ids :])
    domain = DOMAINS["market"]
    counts = {"visible": 0, "infrared": 0}
    per_camera: dict[tuple[int, int], int] = {}
    codes = {}
    for pid in pids:
        identity = _identity(rng, domain)
        codes[str(pid)] = identity.code()
        visible = [int(rng.choice([1, 2])), int(rng.choice([4, 5]))]
        if rng.random() < 0.5:
            visible.append(int(rng.choice([c for c in (1, 2, 4, 5) if c not in visible])))
        infrared = [[3], [6], [3, 6]][int(rng.integers(3))]
        for cam in sorted(visible + infrared):
            per_camera[(cam, pid)] = images_per_cam
            for n in range(images_per_cam):
                path = base / f"cam{cam}" / f"{pid:04d}" / f"{n + 1:04d}.jpg"
                if cam in infrared:
                    _save(path, render_thermal(identity, scene_seeds[SYSU_SCENE[cam]], image_size, rng))
                    counts["infrared"] += 1
                else:
                    _save(path, render(identity, styles[cam], image_size, rng, domain))
                    counts["visible"] += 1
    (base / "exp").mkdir(parents=True, exist_ok=True)
    for name, ids in (("train_id", train), ("val_id", val), ("test_id", test), ("available_id", pids)):
        (base / "exp" / f"{name}.txt").write_text(",".join(str(p) for p in ids) + "\n")
    write_sysu_permutations(base / SYSU_PERMUTATION_FILE, random_sysu_permutations(per_camera, 10, (seed, 1)))
    meta = {
        "dataset_dir": str(base),
        "train_ids": train,
        "val_ids": val,
        "test_ids": test,
        "num_images": counts,
        "identity_codes": codes,
        "seed": seed,
    }
    (base / "synthetic_meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def write_synthetic_regdb(
    root: str | Path,
    num_ids: int = 20,
    images_per_id: int = 4,
    image_size: tuple[int, int] = (64, 32),
    seed: int = 0,
) -> dict:
    """Write a synthetic RegDB under `root`: `num_ids` identities with `images_per_id` visible and thermal images
    each, and ten random half/half train/test splits with labels 0..num_ids/2-1 in each half (as the real lists)."""
    if num_ids < 2 or num_ids % 2:
        raise ValueError(f"num_ids must be even and >= 2, got {num_ids}")
    rng = np.random.default_rng(seed)
    base = Path(root) / "RegDB"
    style = _visible_style(rng, int(rng.integers(1 << 30)))
    thermal_scene = int(rng.integers(1 << 30))
    domain = DOMAINS["market"]
    rel = {"visible": {}, "thermal": {}}
    for pid in range(1, num_ids + 1):
        identity = _identity(rng, domain)
        for n in range(images_per_id):
            v = f"Visible/{pid}/male_front_v_{pid * 100 + n:05d}_1.bmp"
            t = f"Thermal/{pid}/male_front_t_{pid * 100 + n:05d}_1.bmp"
            _save(base / v, render(identity, style, image_size, rng, domain))
            _save(base / t, render_thermal(identity, thermal_scene, image_size, rng))
            rel["visible"].setdefault(pid, []).append(v)
            rel["thermal"].setdefault(pid, []).append(t)
    (base / "idx").mkdir(parents=True, exist_ok=True)
    for trial in range(1, 11):
        perm = rng.permutation(np.arange(1, num_ids + 1)).tolist()
        halves = {"train": sorted(perm[: num_ids // 2]), "test": sorted(perm[num_ids // 2 :])}
        for split, ids in halves.items():
            for modality in ("visible", "thermal"):
                lines = [f"{p} {label}" for label, pid in enumerate(ids) for p in rel[modality][pid]]
                (base / "idx" / f"{split}_{modality}_{trial}.txt").write_text("\n".join(lines) + "\n")
    meta = {"dataset_dir": str(base), "num_ids": num_ids, "images_per_id": images_per_id, "seed": seed}
    (base / "synthetic_meta.json").write_text(json.dumps(meta, indent=1))
    return meta
