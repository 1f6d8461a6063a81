"""Video person re-ID datasets: readers for the real on-disk layouts, frame sampling protocols, a tracklet dataset.

Every reader returns a `VideoSplit(train, test, query_idx, gallery_idx)` of `Tracklet(paths, pid, camid)`:

- `camid` is 0-based; `pid` is the identity as written (0 = MARS distractor, -1 = MARS junk, both kept in `test`
  so the official indices stay valid; the evaluator drops junk from the gallery and never matches a distractor).
- `query_idx` / `gallery_idx` index `test`. MARS keeps the queries inside the gallery (the official protocol:
  the gallery is every test tracklet, the same-id-same-camera rule removes the query itself);
  DukeMTMC-VideoReID and LS-VID have disjoint query and gallery parts.
- Train pids are not relabelled (`relabel_tracklets` does it).

Layouts (`root` may be the dataset folder or the folder holding it):

- MARS: `bbox_train/PPPP/PPPPCcTttttFfff.jpg`, `bbox_test/` (with `0000` distractor and `00-1` junk folders),
  `info/{train_name,test_name}.txt` (one image name per line), `info/tracks_{train,test}_info.mat` (variables
  `track_train_info` / `track_test_info`, N x 4 `[start, end, pid, cam]`, 1-based inclusive line numbers into the
  name lists) and `info/query_IDX.mat` (variable `query_IDX`, 1-based rows of the test tracks).
- DukeMTMC-VideoReID: `DukeMTMC-VideoReID/{train,query,gallery}/PPPP/TTTT/*.jpg`, frame names
  `PPPP_CC_FFFF_...jpg` (camera = the digit after `C`) or the older `PPPPCcFFFF...jpg`.
- LS-VID (the release as public loaders read it): `LS-VID/list_sequence/list_seq_{train,test}.txt` with one
  tracklet per line, `<path prefix> <pid>`, the prefix relative to `LS-VID/`; the tracklet's frames are the files
  whose path starts with the prefix, under `LS-VID/tracklet_{train,test}/`, named
  `{trackid}_{frame}_{camid}_{n}.jpg` (1-based camera, 15 cameras) and ordered by frame number.
  `LS-VID/test/data/info_test.mat` (MATLAB v7.3/HDF5, or v5) holds `query`, the 1-based rows of the queries in
  `list_seq_test.txt`; the gallery is every other test tracklet (a query whose identity has no gallery tracklet
  is left out, as the skip rule would: see `read_lsvid`). The re-arranged `LSVID/info/list_sequence/...` +
  `LSVID/info/data/info_test.mat` (frames still under `LSVID/`) is read too.

Frame sampling (STMN / STE-NVAN): `rrs_indices(n, S, rng)` is restricted random sampling (S chunks of ceil(n/S)
frames, the last frame repeated to pad, one random frame per chunk; `rng=None` takes the first frame of each chunk,
the "RRS" test protocol); `all_frame_clips(n, S)` is the all-frames test protocol (pad to a multiple of S, then
ceil(n/S) clips of S frames taken with a stride). A one-frame tracklet works in every protocol.
"""

from __future__ import annotations

import glob
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from cvlab_shared.data.reid import IMAGENET_MEAN, IMAGENET_STD

MARS_INFO = ("train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat")
MARS_LAYOUT = (
    "MARS/{bbox_train,bbox_test}/PPPP/PPPPCcTttttFfff.jpg + MARS/info/{train_name.txt,test_name.txt,"
    "tracks_train_info.mat,tracks_test_info.mat,query_IDX.mat}"
)
DUKEV_LAYOUT = "DukeMTMC-VideoReID/{train,query,gallery}/PPPP/TTTT/*.jpg"
LSVID_LAYOUT = (
    "LS-VID/list_sequence/{list_seq_train.txt,list_seq_test.txt} ('<path prefix> <pid>' lines, frames "
    "LS-VID/tracklet_{train,test}/.../{trackid}_{frame}_{camid}_{n}.jpg) + LS-VID/test/data/info_test.mat "
    "('query': 1-based rows of list_seq_test.txt), or LSVID/info/list_sequence/... + LSVID/info/data/info_test.mat"
)
PROTOCOLS = ("rrs_train", "rrs", "all")


@dataclass(frozen=True)
class Tracklet:
    """One tracklet: its frame paths in temporal order, identity and 0-based camera."""

    paths: tuple[str, ...]
    pid: int
    camid: int


@dataclass
class VideoSplit:
    """Train tracklets, test tracklets, and the query / gallery rows of `test`."""

    train: list[Tracklet]
    test: list[Tracklet]
    query_idx: list[int]
    gallery_idx: list[int] = field(default_factory=list)

    @property
    def query(self) -> list[Tracklet]:
        return [self.test[i] for i in self.query_idx]

    @property
    def gallery(self) -> list[Tracklet]:
        return [self.test[i] for i in self.gallery_idx]

    def summary(self) -> str:
        """One line per part: tracklets, identities, cameras, frames."""
        lines = []
        for name in ("train", "query", "gallery"):
            tracks = getattr(self, name)
            lines.append(
                f"{name:8s} {len(tracks):6d} tracklets {len({t.pid for t in tracks}):5d} ids "
                f"{len({t.camid for t in tracks}):3d} cams {sum(len(t.paths) for t in tracks):8d} frames"
            )
        return "\n".join(lines)


def _find(root: str | Path, names: Sequence[str], required: Sequence[str], layout: str) -> Path:
    root = Path(root).expanduser()
    candidates = [root] + [root / n for n in names]
    for folder in candidates:
        if all((folder / r).exists() for r in required):
            return folder
    for folder in candidates:  # name the first missing piece of the most complete candidate
        if folder.is_dir() and any((folder / r).exists() for r in required):
            missing = [r for r in required if not (folder / r).exists()]
            raise FileNotFoundError(f"{folder} is missing {missing}; expected layout: {layout}")
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no dataset found in any of: {looked}; expected layout: {layout}")


def _load_mat(path: Path, variable: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ValueError(f"cannot read {path} as a MATLAB file ({exc}); expected layout: {MARS_LAYOUT}") from exc
    if variable not in data:
        raise ValueError(f"{path} has no variable {variable!r}; expected layout: {MARS_LAYOUT}")
    return np.asarray(data[variable]).astype(np.int64)


def _mars_tracks(names: list[str], info: np.ndarray, image_dir: Path, info_path: Path) -> list[Tracklet]:
    if info.ndim != 2 or info.shape[1] != 4:
        raise ValueError(f"{info_path}: expected an N x 4 [start, end, pid, cam] array, got {info.shape}")
    tracks = []
    for row, (start, end, pid, cam) in enumerate(info.tolist(), 1):
        if not 1 <= start <= end <= len(names):
            raise ValueError(
                f"{info_path} row {row}: frames [{start}, {end}] is an empty or out-of-range tracklet "
                f"(1-based lines of a {len(names)}-line name list); expected layout: {MARS_LAYOUT}"
            )
        frames = names[start - 1 : end]
        paths = tuple(str(image_dir / n[:4] / n) for n in frames)
        tracks.append(Tracklet(paths, int(pid), int(cam) - 1))
    return tracks


def read_mars(root: str | Path) -> VideoSplit:
    """MARS (Zheng et al., ECCV'16) with the official split files; queries stay in the gallery (official protocol)."""
    required = ["bbox_train", "bbox_test", "info"] + [f"info/{f}" for f in MARS_INFO]
    folder = _find(root, ("MARS", "mars"), required, MARS_LAYOUT)
    info = folder / "info"
    train_names = [n.strip() for n in (info / "train_name.txt").read_text().splitlines() if n.strip()]
    test_names = [n.strip() for n in (info / "test_name.txt").read_text().splitlines() if n.strip()]
    train = _mars_tracks(
        train_names, _load_mat(info / MARS_INFO[2], "track_train_info"), folder / "bbox_train", info / MARS_INFO[2]
    )
    test = _mars_tracks(
        test_names, _load_mat(info / MARS_INFO[3], "track_test_info"), folder / "bbox_test", info / MARS_INFO[3]
    )
    query_idx = (_load_mat(info / MARS_INFO[4], "query_IDX").reshape(-1) - 1).tolist()
    bad = [i + 1 for i in query_idx if not 0 <= i < len(test)]
    if bad:
        raise ValueError(f"{info / MARS_INFO[4]}: query rows {bad[:5]} are outside the {len(test)} test tracks")
    bad_ids = sorted({test[i].pid for i in query_idx if test[i].pid <= 0})
    if bad_ids:
        raise ValueError(f"{info / MARS_INFO[4]}: queries must be real identities, found pids {bad_ids}")
    return VideoSplit(train, test, query_idx, list(range(len(test))))


_DUKEV_NEW = re.compile(r"^\d+_C(\d+)_")
_DUKEV_OLD = re.compile(r"^\d{4}C(\d+)")


def _dukev_camera(path: Path) -> int:
    for pattern in (_DUKEV_NEW, _DUKEV_OLD):
        match = pattern.match(path.name)
        if match:
            return int(match.group(1)) - 1
    raise ValueError(f"cannot parse the camera of {path} (expected PPPP_CC_FFFF_....jpg); layout: {DUKEV_LAYOUT}")


def _dukev_part(folder: Path) -> list[Tracklet]:
    tracks = []
    for pid_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            pid = int(pid_dir.name)
        except ValueError as exc:
            raise ValueError(f"{pid_dir}: identity folders must be numbers; layout: {DUKEV_LAYOUT}") from exc
        for track_dir in sorted(p for p in pid_dir.iterdir() if p.is_dir()):
            frames = sorted(track_dir.glob("*.jpg"))
            if not frames:
                raise ValueError(f"{track_dir} is an empty tracklet (no .jpg frames); layout: {DUKEV_LAYOUT}")
            tracks.append(Tracklet(tuple(str(f) for f in frames), pid, _dukev_camera(frames[0])))
    return tracks


def _check_queries(query: Sequence[Tracklet], gallery: Sequence[Tracklet], where: Path, layout: str) -> None:
    missing = sorted({t.pid for t in query} - {t.pid for t in gallery})
    if missing:
        raise ValueError(f"{where}: query identities {missing[:10]} have no gallery tracklet; layout: {layout}")


def read_dukev(root: str | Path) -> VideoSplit:
    """DukeMTMC-VideoReID (Wu et al., CVPR'18), the torchreid folder layout; query and gallery are disjoint."""
    folder = _find(root, ("DukeMTMC-VideoReID", "dukemtmc-videoreid"), ("train", "query", "gallery"), DUKEV_LAYOUT)
    train, query, gallery = (_dukev_part(folder / p) for p in ("train", "query", "gallery"))
    _check_queries(query, gallery, folder, DUKEV_LAYOUT)
    return VideoSplit(train, query + gallery, list(range(len(query))), list(range(len(query), len(query) + len(gallery))))


LSVID_FILES = (  # (train list, test list, query mat) of the release, then of the re-arranged copy
    ("list_sequence/list_seq_train.txt", "list_sequence/list_seq_test.txt", "test/data/info_test.mat"),
    ("info/list_sequence/list_seq_train.txt", "info/list_sequence/list_seq_test.txt", "info/data/info_test.mat"),
)


def _find_lsvid(root: str | Path) -> tuple[Path, tuple[str, str, str]]:
    """The LS-VID folder under `root` and which of `LSVID_FILES` it holds; else name what is missing."""
    root = Path(root).expanduser()
    candidates = [root] + [root / n for n in ("LS-VID", "LSVID", "LS_VID", "lsvid")]
    present = []
    for folder in candidates:
        for files in LSVID_FILES:
            found = [f for f in files if (folder / f).is_file()]
            if len(found) == len(files):
                return folder, files
            present.append((len(found), folder, files))
    count, folder, files = max(present, key=lambda x: x[0])  # the most complete candidate, the first on ties
    if count:
        missing = [str(folder / f) for f in files if not (folder / f).is_file()]
        raise FileNotFoundError(f"{folder} is missing {missing}; expected layout: {LSVID_LAYOUT}")
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no LS-VID dataset found in any of: {looked}; expected layout: {LSVID_LAYOUT}")


def _lsvid_frame(path: Path, list_file: Path, line_no: int) -> tuple[int, int]:
    """(frame, 0-based camera) from an LS-VID frame name `{trackid}_{frame}_{camid}_{n}.jpg`."""
    fields = path.stem.split("_")
    try:
        if len(fields) != 4:
            raise ValueError
        frame, cam = int(fields[1]), int(fields[2])
    except ValueError as exc:
        raise ValueError(
            f"{list_file}:{line_no}: cannot parse frame and camera of {path} (expected "
            f"{{trackid}}_{{frame}}_{{camid}}_{{n}}.jpg); expected layout: {LSVID_LAYOUT}"
        ) from exc
    if cam < 1:
        raise ValueError(f"{list_file}:{line_no}: {path} has camera {cam}; cameras are 1-based: {LSVID_LAYOUT}")
    return frame, cam - 1


def _lsvid_list(list_file: Path, base: Path) -> list[Tracklet]:
    tracks = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            prefix, pid = line.split()
            pid_i = int(pid)
        except ValueError as exc:
            raise ValueError(
                f"{list_file}:{line_no}: expected '<path prefix> <pid>', got {line!r}; expected layout: {LSVID_LAYOUT}"
            ) from exc
        head = f"{base}/{prefix}"
        files = [Path(f) for f in glob.glob(glob.escape(head) + "*") if Path(f).is_file()]
        if not files:
            raise ValueError(
                f"{list_file}:{line_no}: no frame starts with {head} (an empty tracklet); "
                f"expected layout: {LSVID_LAYOUT}"
            )
        keyed = sorted((_lsvid_frame(f, list_file, line_no)[0], f.name, f) for f in files)
        cam = _lsvid_frame(keyed[0][2], list_file, line_no)[1]
        tracks.append(Tracklet(tuple(str(f) for _, _, f in keyed), pid_i, cam))
    return tracks


def _lsvid_queries(path: Path) -> np.ndarray:
    """The 1-based `query` rows of `info_test.mat`: h5py for MATLAB v7.3 (HDF5), scipy for v5."""
    import h5py

    try:
        if h5py.is_hdf5(str(path)):
            with h5py.File(path, "r") as f:
                if "query" not in f:
                    raise KeyError
                query = np.asarray(f["query"][()])
        else:
            from scipy.io import loadmat

            query = np.asarray(loadmat(str(path))["query"])
    except KeyError as exc:
        raise ValueError(f"{path} has no variable 'query'; expected layout: {LSVID_LAYOUT}") from exc
    except Exception as exc:  # h5py and scipy raise several types for corrupt files
        raise ValueError(f"cannot read {path} as a MATLAB file ({exc}); expected layout: {LSVID_LAYOUT}") from exc
    rows = query.reshape(-1)
    whole = np.isfinite(rows) & (rows == np.round(rows))
    if query.size == 0 or query.size != max(query.shape, default=1) or not whole.all():
        raise ValueError(
            f"{path}: 'query' must be a non-empty vector of 1-based row numbers, got shape {query.shape}; "
            f"expected layout: {LSVID_LAYOUT}"
        )
    return rows.astype(np.int64)


def read_lsvid(root: str | Path) -> VideoSplit:
    """LS-VID (Li et al., ICCV'19, "Global-Local Temporal Representations"), the release as public loaders read it.

    The queries are the `info_test.mat` rows and the gallery is every other test tracklet (what the public loaders
    do). A query whose identity then has no gallery tracklet has no valid match, so the evaluators' usual skip rule
    (`no_match="skip"`) would leave it out of every metric: it is left out of `query_idx` here, which gives the same
    numbers. One public loader's docstring counts 140 such queries, in a note that MARS loaders carry word for word;
    not checked on the real files here.
    """
    folder, files = _find_lsvid(root)
    train, test = _lsvid_list(folder / files[0], folder), _lsvid_list(folder / files[1], folder)
    mat = folder / files[2]
    rows = _lsvid_queries(mat) - 1
    bad = [int(i) + 1 for i in rows if not 0 <= i < len(test)]
    if bad:
        raise ValueError(f"{mat}: query rows {bad[:5]} are outside the {len(test)} tracklets of {folder / files[1]}")
    if len(set(rows.tolist())) != len(rows):
        raise ValueError(f"{mat}: the query rows repeat; expected layout: {LSVID_LAYOUT}")
    queries = set(rows.tolist())
    gallery_idx = [i for i in range(len(test)) if i not in queries]
    gallery_pids = {test[i].pid for i in gallery_idx}
    query_idx = [int(i) for i in rows if test[i].pid in gallery_pids]
    if not query_idx:
        raise ValueError(f"{mat}: no query identity has a gallery tracklet; expected layout: {LSVID_LAYOUT}")
    return VideoSplit(train, test, query_idx, gallery_idx)


VIDEO_READERS: dict[str, Callable[[str | Path], VideoSplit]] = {
    "mars": read_mars,
    "dukev": read_dukev,
    "lsvid": read_lsvid,
}


def read_video_dataset(name: str, root: str | Path) -> VideoSplit:
    """Read a video re-ID dataset by name: mars, dukev (DukeMTMC-VideoReID) or lsvid."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"dukemtmcvideoreid": "dukev", "duke": "dukev", "dukevideo": "dukev"}.get(key, key)
    if key not in VIDEO_READERS:
        raise ValueError(f"unknown video re-ID dataset {name!r}; known: {sorted(VIDEO_READERS)}")
    return VIDEO_READERS[key](root)


def relabel_tracklets(tracks: Sequence[Tracklet]) -> tuple[list[Tracklet], dict[int, int]]:
    """Tracklets with pids mapped to 0..N-1 in sorted-pid order, and the mapping raw pid -> label."""
    mapping = {pid: i for i, pid in enumerate(sorted({t.pid for t in tracks}))}
    return [Tracklet(t.paths, mapping[t.pid], t.camid) for t in tracks], mapping


def _chunks(num_frames: int, seq_len: int) -> np.ndarray:
    """(seq_len, ceil(n / seq_len)) frame indices: the tracklet padded with its last frame, cut into S chunks."""
    if num_frames < 1:
        raise ValueError("a tracklet needs at least one frame")
    size = math.ceil(num_frames / seq_len)
    idx = np.minimum(np.arange(size * seq_len), num_frames - 1)
    return idx.reshape(seq_len, size)


def rrs_indices(num_frames: int, seq_len: int, rng: random.Random | None = None) -> list[int]:
    """Restricted random sampling (Li et al., CVPR'18 STE-NVAN/STMN): one frame per chunk, random if `rng` is given
    (training), else the chunk's first frame (the RRS test protocol)."""
    chunks = _chunks(num_frames, seq_len)
    if rng is None:
        return chunks[:, 0].tolist()
    return [int(row[rng.randrange(len(row))]) for row in chunks]


def all_frame_clips(num_frames: int, seq_len: int) -> list[list[int]]:
    """All-frames test protocol: the tracklet padded to a multiple of S with its last frame, then split into
    ceil(n / S) clips of S frames with stride ceil(n / S) (clip j = frames j, j + k, j + 2k, ...)."""
    return _chunks(num_frames, seq_len).T.tolist()


def video_transforms(
    size: tuple[int, int] = (256, 128), mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable:
    """Per-frame resize + tensor + normalisation; flips and erasing are applied per tracklet by `VideoDataset`."""
    return T.Compose([T.Resize(size), T.ToTensor(), T.Normalize(mean, std)])


class VideoDataset(Dataset):
    """Frames of tracklets under a sampling protocol; items are `(frames, pid, camid, index)`.

    - `protocol="rrs_train"`: (S, 3, H, W), restricted random sampling, a horizontal flip of the whole tracklet with
      probability `flip_p`, random erasing (value 0) of each frame with probability `erasing_p`.
    - `protocol="rrs"`: (S, 3, H, W), the first frame of each chunk.
    - `protocol="all"`: (2 * clips, S, 3, H, W), every clip followed by its horizontal flip; batch with
      `collate_clips` (the features are averaged per tracklet by the caller).
    Random choices come from `random` / torch's global generators (seeded by Lightning's `seed_everything`).
    """

    def __init__(
        self,
        tracks: Sequence[Tracklet],
        seq_len: int = 6,
        protocol: str = "rrs_train",
        transform: Callable | None = None,
        flip_p: float = 0.5,
        erasing_p: float = 0.5,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.tracks = list(tracks)
        for t in self.tracks:
            if not t.paths:
                raise ValueError(f"empty tracklet (pid {t.pid}, camera {t.camid}): a tracklet needs frames")
        self.seq_len, self.protocol = seq_len, protocol
        self.transform = transform or video_transforms()
        self.flip_p = flip_p
        self.erasing = T.RandomErasing(p=erasing_p, value=0) if erasing_p > 0 else None

    def __len__(self) -> int:
        return len(self.tracks)

    def _load(self, paths: Sequence[str], frames: Sequence[int]) -> torch.Tensor:
        cache: dict[int, torch.Tensor] = {}
        for f in frames:
            if f not in cache:
                cache[f] = self.transform(Image.open(paths[f]).convert("RGB"))
        return torch.stack([cache[f] for f in frames])

    def __getitem__(self, index: int):
        t = self.tracks[index]
        n = len(t.paths)
        if self.protocol == "rrs_train":
            x = self._load(t.paths, rrs_indices(n, self.seq_len, random))
            if random.random() < self.flip_p:
                x = x.flip(-1)
            if self.erasing is not None:
                x = torch.stack([self.erasing(frame) for frame in x])
        elif self.protocol == "rrs":
            x = self._load(t.paths, rrs_indices(n, self.seq_len))
        else:
            clips = [self._load(t.paths, c) for c in all_frame_clips(n, self.seq_len)]
            x = torch.stack([v for c in clips for v in (c, c.flip(-1))])
        return x, t.pid, t.camid, index


def collate_clips(batch):
    """Batch `protocol="all"` items: (sum of clips, S, 3, H, W), pids, camids, indices, clips per item."""
    clips = torch.cat([b[0] for b in batch])
    counts = torch.tensor([b[0].shape[0] for b in batch])
    pids = torch.tensor([b[1] for b in batch])
    camids = torch.tensor([b[2] for b in batch])
    index = torch.tensor([b[3] for b in batch])
    return clips, pids, camids, index, counts
