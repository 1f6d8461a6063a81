"""Deterministic synthetic video re-ID tracklets in the real MARS, DukeMTMC-VideoReID and LS-VID layouts, with the
distractors STMN's memories are meant to remove.

Each identity is an appearance code of the image writer (`cvlab_shared.data.synthetic_reid`: clothing colours,
pattern, bag, body size) drawn on a camera-styled background. A tracklet of 1 to `max_frames` frames follows one
person in one camera with smooth motion (linear drift of the horizontal position and of the body size, small
per-frame jitter). Planted distractors:

- spatial (per camera): a vertical bar of a fixed colour at a fixed image position, present in a fraction
  `bar_p` of the camera's frames and drawn over the person (a lamp post in front of the walkway);
- temporal (per tracklet): with probability `occlusion_p` the first 30-60 % of the frames are occluded by a
  large rectangle of a random colour; with probability `blur_p` a burst of 2-5 consecutive frames is heavily
  blurred.

Test identities appear in 2-4 cameras, some with a second (same-camera) tracklet; each gets one or two queries
from different cameras. The MARS layout adds `num_distractors` `0000` tracklets and `num_junk` `00-1` tracklets to
`bbox_test`. The LS-VID layout writes `info_test.mat` as MATLAB v7.3 does (an HDF5 file behind a 512-byte MATLAB
header, `query` stored as (1, N) doubles). `write_synthetic_video(root, layout=...)` returns the metadata (also
saved as `synthetic_meta.json` in the dataset folder), including per-frame distractor flags and
`[part, pid, 0-based camera, frames]` per tracklet in the readers' tracklet order, so a test can ask where the
memories look. Same arguments and seed give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from cvlab_shared.data.synthetic_reid import (
    DOMAINS,
    CameraStyle,
    Identity,
    _camera_styles,
    _finish,
    _grid,
    _identity,
    _paint_person,
    _person_parts,
)

VIDEO_LAYOUTS = ("mars", "dukev", "lsvid")


def _render_frame(
    identity: Identity | None,
    style: CameraStyle,
    size: tuple[int, int],
    rng: np.random.Generator,
    domain: dict,
    cx: float,
    scale: float,
    bar: tuple[float, float, tuple[float, float, float]] | None,
    occlude: tuple[float, float, tuple[float, float, float]] | None,
    blur: int,
) -> np.ndarray:
    yy, xx = _grid(size)
    img = np.empty((*size, 3), np.float32)
    img[:] = style.background
    trng = np.random.default_rng(style.texture_seed)
    freq, phase = trng.uniform(3, 9), trng.uniform(0, 6.3)
    img += (domain["texture"] * np.sin(freq * 6.3 * (yy + 0.3 * xx) + phase))[..., None]
    if identity is not None:
        body_h = identity.height * scale
        top = (1 - body_h) / 2 + rng.uniform(-0.01, 0.01)
        half = identity.width / 2 * scale
        parts = _person_parts(yy, xx, top, body_h, cx, half, 0.07)
        _paint_person(img, identity, parts, xx, (0.85, 0.68, 0.55), np.array(identity.upper, np.float32),
                      identity.lower, identity.bag, lambda u: u * 0.45, lambda u: 1 - u)
    if bar is not None:
        x0, width, colour = bar
        img[:, (xx[0] >= x0) & (xx[0] < x0 + width)] = colour
    if occlude is not None:
        y0, height, colour = occlude
        img[(yy >= y0) & (yy < y0 + height)] = colour
    return _finish(img, style, rng, style.blur + blur)


def _tracklet(
    rng: np.random.Generator,
    identity: Identity | None,
    style: CameraStyle,
    bar: tuple,
    size: tuple[int, int],
    domain: dict,
    num_frames: int,
    bar_p: float,
    occlusion_p: float,
    blur_p: float,
) -> tuple[list[np.ndarray], dict]:
    cx0, drift = rng.uniform(0.4, 0.6), rng.uniform(-0.15, 0.15) / max(num_frames, 1)
    s0, growth = rng.uniform(0.9, 1.0), rng.uniform(-0.1, 0.1) / max(num_frames, 1)
    occluded = int(np.ceil(num_frames * rng.uniform(0.3, 0.6))) if rng.random() < occlusion_p else 0
    occ = (rng.uniform(0.2, 0.35), rng.uniform(0.45, 0.6), tuple(rng.uniform(0.0, 1.0, 3).tolist()))
    blurred = np.zeros(num_frames, bool)
    if rng.random() < blur_p and num_frames > 1:
        start, length = int(rng.integers(num_frames)), int(rng.integers(2, 6))
        blurred[start : start + length] = True
    with_bar = rng.random(num_frames) < bar_p
    frames = []
    for t in range(num_frames):
        cx = cx0 + drift * t + rng.uniform(-0.01, 0.01)
        frames.append(
            _render_frame(
                identity,
                style,
                size,
                rng,
                domain,
                cx,
                s0 + growth * t,
                bar if with_bar[t] else None,
                occ if t < occluded else None,
                3 if blurred[t] else 0,
            )
        )
    flags = {
        "occluded": [t < occluded for t in range(num_frames)],
        "blurred": blurred.tolist(),
        "bar": with_bar.tolist(),
    }
    return frames, flags


def write_synthetic_video(
    root: str | Path,
    layout: str = "mars",
    num_train_ids: int = 16,
    num_test_ids: int = 12,
    num_cams: int = 4,
    min_frames: int = 1,
    max_frames: int = 40,
    image_size: tuple[int, int] = (64, 32),
    num_distractors: int = 3,
    num_junk: int = 2,
    bar_p: float = 0.7,
    occlusion_p: float = 0.35,
    blur_p: float = 0.3,
    camera_bias: float = 0.3,
    seed: int = 0,
) -> dict:
    """Write a synthetic video dataset in `layout` ("mars", "dukev" or "lsvid") under `root`; see the module doc."""
    if layout not in VIDEO_LAYOUTS:
        raise ValueError(f"layout must be one of {VIDEO_LAYOUTS}, got {layout!r}")
    if not 2 <= num_cams <= 6:
        raise ValueError(f"num_cams must be in [2, 6], got {num_cams}")
    if not 1 <= min_frames <= max_frames <= 999:
        raise ValueError(f"need 1 <= min_frames <= max_frames <= 999, got {min_frames}, {max_frames}")
    dom = DOMAINS["market"]
    rng = np.random.default_rng(seed)
    styles = _camera_styles(rng, num_cams, np.zeros(num_cams), 0.0, camera_bias, dom)
    bars = [
        (float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.12, 0.2)), tuple(rng.uniform(0.1, 0.9, 3).tolist()))
        for _ in range(num_cams)
    ]
    pids = rng.choice(np.arange(1, 1500), size=num_train_ids + num_test_ids, replace=False)
    train_pids, test_pids = sorted(pids[:num_train_ids].tolist()), sorted(pids[num_train_ids:].tolist())
    identities = {pid: _identity(rng, dom) for pid in train_pids + test_pids}
    # (part, pid, cam, frames, flags); part in train / query / gallery (MARS: query rows also sit in the gallery)
    tracks: list[tuple[str, int, int, list[np.ndarray], dict]] = []

    def shoot(part: str, pid: int, cam: int, identity: Identity | None) -> None:
        n = int(rng.integers(min_frames, max_frames + 1))
        frames, flags = _tracklet(rng, identity, styles[cam], bars[cam], image_size, dom, n, bar_p, occlusion_p, blur_p)
        tracks.append((part, pid, cam, frames, flags))

    for pid in train_pids:
        for cam in sorted(rng.choice(num_cams, size=int(rng.integers(2, min(4, num_cams) + 1)), replace=False)):
            shoot("train", pid, int(cam), identities[pid])
    for pid in test_pids:
        cams = sorted(rng.choice(num_cams, size=int(rng.integers(2, min(4, num_cams) + 1)), replace=False).tolist())
        queries = min(int(rng.integers(1, 3)), len(cams) - 1)  # at least one other camera left for the gallery
        for i, cam in enumerate(cams):
            shoot("query" if i < queries else "gallery", pid, cam, identities[pid])
        if rng.random() < 0.5:  # a same-camera second tracklet (excluded by the same-id-same-camera rule)
            shoot("gallery", pid, cams[0], identities[pid])
    if layout == "mars":
        for _ in range(num_distractors):
            shoot("gallery", 0, int(rng.integers(num_cams)), _identity(rng, dom))
        for _ in range(num_junk):
            shoot("gallery", -1, int(rng.integers(num_cams)), None)
    else:
        for pid in range(1501, 1501 + num_distractors):
            shoot("gallery", pid, int(rng.integers(num_cams)), _identity(rng, dom))

    writer = {"mars": _write_mars, "dukev": _write_dukev, "lsvid": _write_lsvid}[layout]
    dataset_dir, order = writer(Path(root), tracks)
    meta = {
        "dataset_dir": str(dataset_dir),
        "layout": layout,
        "num_cams": num_cams,
        "bars": [{"x0": b[0], "width": b[1], "colour": list(b[2])} for b in bars],
        "train_pids": train_pids,
        "test_pids": test_pids,
        "identity_codes": {str(pid): ident.code() for pid, ident in identities.items()},
        "num_tracklets": {p: sum(1 for t in tracks if t[0] == p) for p in ("train", "query", "gallery")},
        # per-frame flags in each reader's order: train tracklets, then test tracklets (VideoSplit.test)
        "train_flags": [tracks[i][4] for i in order["train"]],
        "test_flags": [tracks[i][4] for i in order["test"]],
        "train_tracks": [[tracks[i][0], tracks[i][1], tracks[i][2], len(tracks[i][3])] for i in order["train"]],
        "test_tracks": [[tracks[i][0], tracks[i][1], tracks[i][2], len(tracks[i][3])] for i in order["test"]],
        "seed": seed,
    }
    (dataset_dir / "synthetic_meta.json").write_text(json.dumps(meta))
    return meta


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def _mars_pid(pid: int) -> str:
    return "00-1" if pid == -1 else f"{pid:04d}"


def _write_mars(root: Path, tracks) -> tuple[Path, dict]:
    base = root / "MARS"
    order: dict[str, list[int]] = {"train": [], "test": []}
    names: dict[str, list[str]] = {"train": [], "test": []}
    info: dict[str, list[list[int]]] = {"train": [], "test": []}
    query_rows: list[int] = []
    counter: dict[tuple[int, int], int] = {}
    for i, (part, pid, cam, frames, _) in enumerate(tracks):
        split = "train" if part == "train" else "test"
        number = counter[(pid, cam)] = counter.get((pid, cam), 0) + 1
        start = len(names[split]) + 1
        folder = base / ("bbox_train" if split == "train" else "bbox_test") / _mars_pid(pid)
        for f, image in enumerate(frames, 1):
            name = f"{_mars_pid(pid)}C{cam + 1}T{number:04d}F{f:03d}.jpg"
            _save(folder / name, image)
            names[split].append(name)
        info[split].append([start, len(names[split]), pid, cam + 1])
        order[split].append(i)
        if part == "query":
            query_rows.append(len(info["test"]))
    (base / "info").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (base / "info" / f"{split}_name.txt").write_text("\n".join(names[split]) + "\n")
        savemat(str(base / "info" / f"tracks_{split}_info.mat"), {f"track_{split}_info": np.array(info[split], float)})
    savemat(str(base / "info" / "query_IDX.mat"), {"query_IDX": np.array([query_rows], float)})
    return base, order


def _write_dukev(root: Path, tracks) -> tuple[Path, dict]:
    base = root / "DukeMTMC-VideoReID"
    counter: dict[int, int] = {}
    frame_no = iter(range(1, 10**7))
    parts: dict[str, list[tuple[str, int, int]]] = {"train": [], "query": [], "gallery": []}
    for i, (part, pid, cam, frames, _) in enumerate(tracks):
        number = counter[pid] = counter.get(pid, 0) + 1
        folder = base / part / f"{pid:04d}" / f"{number:04d}"
        for f, image in enumerate(frames, 1):
            _save(folder / f"{pid:04d}_C{cam + 1}_F{f:04d}_X{next(frame_no):05d}.jpg", image)
        parts[part].append((f"{pid:04d}/{number:04d}", pid, i))
    # the reader lists identity folders, then tracklet folders, in sorted order
    order = {p: [i for _, _, i in sorted(parts[p])] for p in parts}
    return base, {"train": order["train"], "test": order["query"] + order["gallery"]}


def write_matlab_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 MAT-file: HDF5 behind MATLAB's 128-byte text header (in a 512-byte user block), each variable
    a dataset tagged with its MATLAB class, stored transposed as MATLAB does (column-major)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=np.asarray(value, float).T)
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + bytes(8) + b"\x00\x02IM")


def _write_lsvid(root: Path, tracks) -> tuple[Path, dict]:
    base = root / "LS-VID"
    order: dict[str, list[int]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    query_rows: list[int] = []
    for i, (part, pid, cam, frames, _) in enumerate(tracks):
        split = "train" if part == "train" else "test"
        prefix = f"tracklet_{split}/{pid:04d}/{i + 1:05d}_"  # one track id per tracklet
        start = 10 * (i + 1)  # video frame numbers
        for f, image in enumerate(frames):
            _save(base / f"{prefix}{start + f:06d}_{cam + 1:02d}_1.jpg", image)
        lines[split].append(f"{prefix} {pid}")
        order[split].append(i)
        if part == "query":
            query_rows.append(len(lines["test"]))
    (base / "list_sequence").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (base / "list_sequence" / f"list_seq_{split}.txt").write_text("\n".join(lines[split]) + "\n")
    (base / "test" / "data").mkdir(parents=True, exist_ok=True)
    # MATLAB holds `query` as an N x 1 column; h5py reads it back as (1, N), as the public loaders index it
    write_matlab_v73(base / "test" / "data" / "info_test.mat", {"query": np.array(query_rows, float)[:, None]})
    return base, order
