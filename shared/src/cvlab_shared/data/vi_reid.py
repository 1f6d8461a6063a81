"""Visible-infrared re-ID datasets: SYSU-MM01 and RegDB readers of the real layouts, the SYSU gallery sampling of
the test protocol, and the paired identity sampler of AGW / LbA (P identities x K visible + K infrared images).

Layouts (as AGW / LbA / CAJ read them):

- SYSU-MM01 (Wu et al., ICCV'17): `SYSU-MM01/camK/PPPP/NNNN.jpg` for K = 1..6 (visible cameras 1, 2, 4, 5;
  infrared 3, 6) and `SYSU-MM01/exp/{train_id,val_id,test_id}.txt`, each one line of comma-separated ids.
  Training uses train + val ids (395 classes on the real data), as AGW and LbA do.
  The official MATLAB evaluation's fixed gallery permutations, `rand_perm_cam.mat` (in the SYSU-MM01 GitHub
  repository's `evaluation/data_split/`; AGW-derived code reads it from `SYSU-MM01/exp/`), are read by
  `read_sysu_permutations` (layout in `SYSU_PERMUTATION_LAYOUT`).
- RegDB (Nguyen et al., Sensors'17): `RegDB/Visible/...`, `RegDB/Thermal/...` and
  `RegDB/idx/{train,test}_{visible,thermal}_{1..10}.txt`, each line "relative/path label".

Records are the core's `ReidRecord(path, pid, camid)` with 0-based cameras (SYSU `cam3` -> camid 2; RegDB visible
0, thermal 1). Infrared images are read as RGB (one channel replicated), as the official loaders do.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Sampler

from cvlab_shared.data.reid import ReidRecord
from cvlab_shared.distributed import rank_and_world

SYSU_VISIBLE_CAMERAS = (1, 2, 4, 5)
SYSU_INFRARED_CAMERAS = (3, 6)
SYSU_GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_LAYOUT = "SYSU-MM01/cam1..cam6/PPPP/NNNN.jpg with SYSU-MM01/exp/{train_id,val_id,test_id}.txt"
REGDB_LAYOUT = "RegDB/{Visible,Thermal}/... with RegDB/idx/{train,test}_{visible,thermal}_{1..10}.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SYSU_PERMUTATION_FILE = "exp/rand_perm_cam.mat"
SYSU_PERMUTATION_LAYOUT = (
    "a MATLAB v5 .mat file holding `rand_perm_cam`: a 6 x 1 cell (one per camera) of cells over the person ids "
    "1..533, whose entry {cam}{pid} is a trials x #images matrix of 1-based indices into the sorted images of "
    "camK/PPPP (row t = the permutation of trial t; empty when the id has no image in that camera); the official "
    "file is evaluation/data_split/rand_perm_cam.mat of github.com/wuancong/SYSU-MM01"
)
SYSU_NUM_IDS = 533
Permutations = Mapping[tuple[int, int], Sequence[Sequence[int]]]


class VIDatasetError(ValueError):
    """A visible-infrared dataset does not have the expected layout (the message names the file or folder)."""


def _find(root: str | Path, names: Sequence[str], required: str) -> Path:
    root = Path(root).expanduser()
    for folder in (root, *(root / n for n in names)):
        if (folder / required).exists():
            return folder
    return root / names[0]


def _read_id_list(path: Path) -> list[int]:
    if not path.is_file():
        raise VIDatasetError(f"missing {path}: expected {SYSU_LAYOUT} (one line of comma-separated ids)")
    text = path.read_text().strip()
    try:
        return [int(x) for x in text.replace("\n", ",").split(",") if x.strip()]
    except ValueError as exc:
        raise VIDatasetError(f"{path}: expected one line of comma-separated integer ids, got {text[:60]!r}") from exc


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


@dataclass
class SysuMM01:
    """SYSU-MM01 read from disk: training records of both modalities and the test identities.

    `query(mode)` gives every infrared image of the test ids (cameras 3 and 6, both modes); `gallery(mode, trial)`
    draws the visible gallery of one random trial (see `sysu_gallery`).
    """

    root: Path
    train_visible: list[ReidRecord]
    train_thermal: list[ReidRecord]
    test_ids: list[int]
    _files: dict[tuple[int, int], list[str]] = field(default_factory=dict, repr=False)

    def files(self, cam: int, pid: int) -> list[str]:
        """Sorted image paths of identity `pid` in camera `cam` (1-based), empty when absent."""
        key = (cam, pid)
        if key not in self._files:
            self._files[key] = [str(p) for p in _images(self.root / f"cam{cam}" / f"{pid:04d}")]
        return self._files[key]

    def query(self, mode: str = "all") -> list[ReidRecord]:
        """All infrared images of the test identities (the probe set of both search modes)."""
        _check_mode(mode)
        return [
            ReidRecord(path, pid, cam - 1)
            for pid in sorted(self.test_ids)
            for cam in SYSU_INFRARED_CAMERAS
            for path in self.files(cam, pid)
        ]

    def gallery(
        self,
        mode: str = "all",
        trial: int = 0,
        shots: int = 1,
        permutations: Permutations | None = None,
    ) -> list[ReidRecord]:
        """The visible gallery of one trial; see `sysu_gallery`."""
        return sysu_gallery(self.files, self.test_ids, mode, trial, shots, permutations)

    def read_permutations(
        self, path: str | Path | None = None, trials: int = 1
    ) -> dict[tuple[int, int], list[list[int]]]:
        """The official gallery permutations (`read_sysu_permutations` of `path`, by default
        `SYSU-MM01/exp/rand_perm_cam.mat`), checked against the images on disk: every visible camera of every
        test id with images has at least `trials` rows of indices in 1..#images."""
        path = Path(path).expanduser() if path is not None else self.root / SYSU_PERMUTATION_FILE
        perms = read_sysu_permutations(path)
        for pid in self.test_ids:
            for cam in SYSU_VISIBLE_CAMERAS:
                n = len(self.files(cam, pid))
                if not n:
                    continue
                folder = self.root / f"cam{cam}" / f"{pid:04d}"
                rows = perms.get((cam, pid))
                if rows is None or len(rows) < trials:
                    got = "none" if rows is None else f"{len(rows)} trials"
                    raise VIDatasetError(
                        f"{path}: camera {cam} id {pid:04d} needs a permutation for {trials} trials ({n} images in "
                        f"{folder}), found {got}; expected {SYSU_PERMUTATION_LAYOUT}"
                    )
                bad = [i for row in rows for i in row if not 1 <= i <= n]
                if bad:
                    raise VIDatasetError(
                        f"{path}: camera {cam} id {pid:04d}: index {bad[0]} outside 1..{n} (the images in {folder})"
                    )
        return perms


def _check_mode(mode: str) -> None:
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"SYSU-MM01 search mode must be one of {sorted(SYSU_GALLERY_CAMERAS)}, got {mode!r}")


def sysu_gallery(
    files: Callable[[int, int], list[str]],
    test_ids: Sequence[int],
    mode: str = "all",
    trial: int = 0,
    shots: int = 1,
    permutations: Permutations | None = None,
) -> list[ReidRecord]:
    """The SYSU-MM01 visible gallery of one trial: `shots` images per identity and camera (1 single-shot, 10
    multi-shot) from cameras 1, 2, 4, 5 ("all") or 1, 2 ("indoor").

    Default order (AGW / LbA `process_gallery_sysu`): Python `random.seed(trial)`, then for each test id in sorted
    order and each camera, `random.choice` of the sorted file list (`random.sample` of `shots` files for
    multi-shot). `permutations[(cam, pid)][trial]` (1-based indices into the sorted files, e.g. from
    `read_sysu_permutations` of the official `rand_perm_cam.mat`) selects the first `shots` files of that
    permutation instead, as the official MATLAB `get_testing_set.m` does (`rand_perm_cam{cam}{id}(trial, 1:shots)`).
    """
    _check_mode(mode)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = random.Random(trial)
    out = []
    for pid in sorted(test_ids):
        for cam in SYSU_GALLERY_CAMERAS[mode]:
            paths = files(cam, pid)
            if not paths:
                continue
            if permutations is not None:
                rows = permutations.get((cam, pid), ())
                if trial >= len(rows):
                    raise ValueError(f"no official permutation of trial {trial} for camera {cam} id {pid:04d} "
                                     f"({len(rows)} trials given)")
                chosen = [paths[int(i) - 1] for i in list(rows[trial])[:shots]]
            elif shots == 1:
                chosen = [rng.choice(paths)]
            else:
                chosen = rng.sample(paths, min(shots, len(paths)))
            out += [ReidRecord(p, pid, cam - 1) for p in chosen]
    return out


def read_sysu_permutations(path: str | Path) -> dict[tuple[int, int], list[list[int]]]:
    """Read the official SYSU-MM01 gallery permutations (`rand_perm_cam.mat`, see `SYSU_PERMUTATION_LAYOUT`) as
    `{(cam, pid): [1-based indices of trial t] per trial}` (cameras and ids 1-based; ids without images left out)."""
    from scipy.io import loadmat

    path = Path(path).expanduser()
    if not path.is_file():
        raise VIDatasetError(f"missing {path}: expected {SYSU_PERMUTATION_LAYOUT} (copy it there or pass its path)")
    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a non-.mat or an HDF5 (v7.3) file
        raise VIDatasetError(
            f"{path}: cannot read it as a MATLAB v5 .mat file ({exc}); expected {SYSU_PERMUTATION_LAYOUT}"
        ) from exc
    cams = np.asarray(data.get("rand_perm_cam", np.empty(0)), dtype=object).ravel()
    if len(cams) != 6 or not all(isinstance(c, np.ndarray) and c.dtype == object for c in cams):
        keys = sorted(k for k in data if not k.startswith("__"))
        raise VIDatasetError(f"{path}: expected {SYSU_PERMUTATION_LAYOUT}; found variables {keys}")
    out: dict[tuple[int, int], list[list[int]]] = {}
    for cam, cell in enumerate(cams, 1):
        for pid, matrix in enumerate(cell.ravel(), 1):
            m = np.asarray(matrix)
            if m.size == 0:
                continue
            if m.ndim != 2 or m.dtype.kind not in "iuf" or (m < 1).any() or (m != np.round(m)).any():
                raise VIDatasetError(f"{path}: rand_perm_cam{{{cam}}}{{{pid}}} must be a trials x #images matrix of "
                                     f"positive integers, got shape {m.shape} dtype {m.dtype}")
            out[(cam, pid)] = m.astype(np.int64).tolist()
    return out


def write_sysu_permutations(path: str | Path, permutations: Permutations, num_ids: int = SYSU_NUM_IDS) -> Path:
    """Write `permutations` (`{(cam, pid): rows of 1-based indices}`) as the official `rand_perm_cam.mat`
    (`SYSU_PERMUTATION_LAYOUT`: 6 x 1 cell of `num_ids` x 1 cells of double matrices, empty for absent ids)."""
    from scipy.io import savemat

    num_ids = max([num_ids, *(pid for _, pid in permutations)])
    cams = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        cell = np.empty((num_ids, 1), dtype=object)
        for pid in range(1, num_ids + 1):
            rows = permutations.get((cam, pid))
            cell[pid - 1, 0] = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 0))
        cams[cam - 1, 0] = cell
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"rand_perm_cam": cams})
    return path


def random_sysu_permutations(
    counts: Mapping[tuple[int, int], int], trials: int = 10, seed: int | Sequence[int] = 0
) -> dict[tuple[int, int], list[list[int]]]:
    """`trials` random 1-based permutations of each (cam, pid)'s `counts` images (seeded numpy), in the layout of
    `read_sysu_permutations`, as the official `rand_perm_cam.mat` holds them."""
    rng = np.random.default_rng(seed)
    return {
        key: [(rng.permutation(n) + 1).tolist() for _ in range(trials)] for key, n in sorted(counts.items()) if n > 0
    }


def read_sysu_mm01(root: str | Path) -> SysuMM01:
    """SYSU-MM01 (train = train_id + val_id, visible cams 1, 2, 4, 5 and infrared 3, 6). Errors name the missing
    list file, or the identity without a visible or an infrared image."""
    folder = _find(root, ("SYSU-MM01", "sysu-mm01", "SYSU_MM01"), "exp")
    exp = folder / "exp"
    if not exp.is_dir():
        raise VIDatasetError(f"missing {exp}: expected {SYSU_LAYOUT}")
    train_ids = _read_id_list(exp / "train_id.txt") + _read_id_list(exp / "val_id.txt")
    test_ids = _read_id_list(exp / "test_id.txt")
    data = SysuMM01(folder, [], [], sorted(test_ids))
    for pid in sorted(set(train_ids)):
        vis = [ReidRecord(p, pid, c - 1) for c in SYSU_VISIBLE_CAMERAS for p in data.files(c, pid)]
        ir = [ReidRecord(p, pid, c - 1) for c in SYSU_INFRARED_CAMERAS for p in data.files(c, pid)]
        for name, recs, cams in (("visible", vis, SYSU_VISIBLE_CAMERAS), ("infrared", ir, SYSU_INFRARED_CAMERAS)):
            if not recs:
                where = ", ".join(str(folder / f"cam{c}" / f"{pid:04d}") for c in cams)
                raise VIDatasetError(f"training id {pid:04d} has no {name} image: looked in {where} ({SYSU_LAYOUT})")
        data.train_visible += vis
        data.train_thermal += ir
    for pid in data.test_ids:
        if not any(data.files(c, pid) for c in SYSU_INFRARED_CAMERAS):
            raise VIDatasetError(f"test id {pid:04d} has no infrared image in {folder}/cam3 or cam6 ({SYSU_LAYOUT})")
    return data


@dataclass
class RegDBSplit:
    """One of RegDB's ten train/test splits; labels as in the list files (0..205 on the real data)."""

    trial: int
    train_visible: list[ReidRecord]
    train_thermal: list[ReidRecord]
    test_visible: list[ReidRecord]
    test_thermal: list[ReidRecord]


def _read_regdb_list(folder: Path, name: str, camid: int) -> list[ReidRecord]:
    path = folder / "idx" / name
    if not path.is_file():
        raise VIDatasetError(f"missing {path}: expected {REGDB_LAYOUT} (lines 'relative/path label')")
    records = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise VIDatasetError(f"{path}:{line_no}: expected 'relative/path label', got {line!r}")
        records.append(ReidRecord(str(folder / parts[0]), int(parts[1]), camid))
    return records


def read_regdb(root: str | Path, trial: int = 1) -> RegDBSplit:
    """RegDB split `trial` (1..10): visible camera 0, thermal camera 1."""
    if not isinstance(trial, int) or not 1 <= trial <= 10:
        raise VIDatasetError(f"RegDB trial must be an integer in 1..10, got {trial!r}")
    folder = _find(root, ("RegDB", "regdb"), "idx")
    part = {
        (s, m): _read_regdb_list(folder, f"{s}_{m}_{trial}.txt", 0 if m == "visible" else 1)
        for s in ("train", "test")
        for m in ("visible", "thermal")
    }
    return RegDBSplit(
        trial, part["train", "visible"], part["train", "thermal"], part["test", "visible"], part["test", "thermal"]
    )


class PairedVIDataset(Dataset):
    """Index `(i, j)` -> `(visible image i, infrared image j, visible label, infrared label)`; used with
    `VIIdentitySampler`, which yields such pairs. Infrared images are read as RGB (one channel replicated)."""

    def __init__(
        self,
        visible: Sequence[ReidRecord],
        thermal: Sequence[ReidRecord],
        transform_visible: Callable | None = None,
        transform_thermal: Callable | None = None,
    ) -> None:
        self.visible, self.thermal = list(visible), list(thermal)
        self.transform_visible = transform_visible
        self.transform_thermal = transform_thermal if transform_thermal is not None else transform_visible

    def __len__(self) -> int:
        return max(len(self.visible), len(self.thermal))

    def __getitem__(self, index: tuple[int, int]):
        i, j = index
        rv, rt = self.visible[i], self.thermal[j]
        xv, xt = Image.open(rv.path).convert("RGB"), Image.open(rt.path).convert("RGB")
        if self.transform_visible is not None:
            xv, xt = self.transform_visible(xv), self.transform_thermal(xt)
        return xv, xt, rv.pid, rt.pid


class VIIdentitySampler(Sampler[tuple[int, int]]):
    """AGW / LbA `IdentitySampler`: each batch draws `num_ids` identities without replacement, then for each one
    `num_pos` visible and `num_pos` infrared images with replacement; yields `(visible index, infrared index)`
    pairs, identity-major (the `num_pos` pairs of an identity are contiguous, as CMAlign's pairing expects).

    An epoch has max(#visible, #infrared) // (num_ids * num_pos) + 1 batches (the official count). Under DDP each
    process keeps every world-th batch (use `Trainer(use_distributed_sampler=False)`); `batch_size` is per
    process. `set_epoch(e)`: a new seeded draw each epoch.
    """

    def __init__(
        self,
        visible_pids: Sequence[int],
        thermal_pids: Sequence[int],
        num_ids: int = 8,
        num_pos: int = 4,
        seed: int = 0,
        num_batches: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.by_pid_v: dict[int, list[int]] = {}
        self.by_pid_t: dict[int, list[int]] = {}
        for i, p in enumerate(visible_pids):
            self.by_pid_v.setdefault(int(p), []).append(i)
        for i, p in enumerate(thermal_pids):
            self.by_pid_t.setdefault(int(p), []).append(i)
        missing = sorted(set(self.by_pid_v) ^ set(self.by_pid_t))
        if missing:
            raise ValueError(f"identities {missing[:10]} have images in only one modality")
        self.pids = sorted(self.by_pid_v)
        if len(self.pids) < num_ids:
            raise ValueError(f"VIIdentitySampler needs at least num_ids={num_ids} identities, got {len(self.pids)}")
        process, processes = rank_and_world()
        self.num_replicas = num_replicas if num_replicas is not None else processes
        self.rank = rank if rank is not None else process
        self.num_ids, self.num_pos, self.seed, self.epoch = num_ids, num_pos, seed, 0
        total = max(len(visible_pids), len(thermal_pids)) // (num_ids * num_pos) + 1
        self.num_batches = num_batches if num_batches is not None else total

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[tuple[int, int]]]:
        """Every process's batches of this epoch (the same on all ranks), before sharding."""
        rng = random.Random(self.seed * 100003 + self.epoch)
        out = []
        for _ in range(self.num_batches):
            batch = []
            for pid in rng.sample(self.pids, self.num_ids):
                vis = rng.choices(self.by_pid_v[pid], k=self.num_pos)
                ir = rng.choices(self.by_pid_t[pid], k=self.num_pos)
                batch += list(zip(vis, ir))
            out.append(batch)
        usable = len(out) - len(out) % self.num_replicas
        return out[:usable]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for batch in self.batches()[self.rank :: self.num_replicas]:
            yield from batch

    def __len__(self) -> int:
        return (self.num_batches // self.num_replicas) * self.num_ids * self.num_pos
