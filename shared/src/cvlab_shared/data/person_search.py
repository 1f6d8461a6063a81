"""Person-search dataset readers of the real on-disk layouts: CUHK-SYSU and PRW (boxes xyxy int, pid 5555 = unlabelled).

CUHK-SYSU (`CUHK-SYSU/`)::

    Image/SSM/s{N}.jpg
    annotation/Images.mat                  'Img': per image (imname, nAppear, box: struct array of idlocate [x,y,w,h])
    annotation/pool.mat                    'pool': the test (gallery) image names
    annotation/test/train_test/Train.mat   'Train': per identity (idname, nAppear, scene(imname, idlocate, ishard))
    annotation/test/train_test/TestG{N}.mat  'TestG{N}': per query Query(imname, idlocate, ishard), Gallery (N entries)

Boxes with w or h <= 0 are dropped; training pids are set by exact box match against Train.mat (identity index + 1);
training images are all images minus the pool; test pids come from TestG50 (query index + 1) and the queries are
TestG50's (the same for every gallery size; the smallest TestG file when TestG50 is absent).

PRW (`PRW-v16.04.20/`)::

    frames/c{cam}s{seq}_{frame:06d}.jpg
    annotations/<frame>.jpg.mat     'box_new' (else 'anno_file', else 'anno_previous'): rows [pid, x, y, w, h]
    frame_train.mat 'img_index_train', frame_test.mat 'img_index_test'   (frame names without .jpg)
    query_info.txt                  "pid x y w h frame" per line (CRLF line endings)

Negative coordinates are clipped to 0, pid -2 (unlabelled) becomes 5555, and in the training split the pids
`prw_unlabeled_train_pids` (483 and 932, as the official loaders do) too; the camera is the digit after 'c'.

Every problem with the files is one `FileNotFoundError`/`ValueError` naming the file and the expected layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

UNLABELED = 5555
CUHK_LAYOUT = (
    "CUHK-SYSU/{Image/SSM/s*.jpg, annotation/Images.mat, annotation/pool.mat, "
    "annotation/test/train_test/{Train,TestG50,TestG100,...}.mat}"
)
PRW_LAYOUT = (
    "PRW-v16.04.20/{frames/c*s*_*.jpg, annotations/<frame>.jpg.mat, frame_train.mat, frame_test.mat, query_info.txt}"
)


@dataclass
class SceneRecord:
    """One image: path, name, camera (0 for CUHK-SYSU), boxes (n, 4) int xyxy and pids (n,) (5555 unlabelled)."""

    path: str
    name: str
    cam: int
    boxes: np.ndarray
    pids: np.ndarray


@dataclass
class QueryRecord:
    """One query box: image path and name, camera, box (4,) int xyxy, pid."""

    path: str
    name: str
    cam: int
    box: np.ndarray
    pid: int


@dataclass
class PersonSearchData:
    """Train scenes, test (gallery) scenes, queries and, for CUHK-SYSU, the per-query gallery protocols by size."""

    layout: str
    root: Path
    train: list[SceneRecord]
    gallery: list[SceneRecord]
    queries: list[QueryRecord]
    protocols: dict[int, list[list[tuple[str, np.ndarray | None]]]] = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        """Labelled training identities (pids 1..n): the lookup-table size."""
        pids = [int(p) for s in self.train for p in s.pids if p != UNLABELED]
        return max(pids, default=0)


def _need(path: Path, layout: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"missing {path}; expected layout: {layout}")
    return path


def _loadmat(path: Path, layout: str, key: str | None = None) -> dict:
    from scipy.io import loadmat

    _need(path, layout)
    try:
        data = loadmat(str(path))
    except Exception as err:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: cannot read the .mat file ({err}); expected layout: {layout}") from None
    if key is not None and key not in data:
        raise ValueError(f"{path}: no variable '{key}' (has {sorted(k for k in data if not k.startswith('__'))})")
    return data


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 2:] += boxes[:, :2]
    return boxes.astype(np.int32)


def _text(value) -> str:
    """The string inside a loadmat char cell (array(['s1.jpg']) or nested object arrays)."""
    while isinstance(value, np.ndarray):
        value = value.flat[0]
    return str(value)


def check_boxes(scenes: list[SceneRecord], layout: str) -> None:
    """Every box inside its image (read from the image header) with positive size, else one clear error."""
    for s in scenes:
        path = _need(Path(s.path), layout)
        with Image.open(path) as im:
            w, h = im.size
        b = s.boxes
        bad = (
            (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        )
        if bad.any():
            raise ValueError(f"{path}: box {b[bad][0].tolist()} (xyxy) lies outside the {w}x{h} image")


def _cuhk_protocol(path: Path, size: int) -> list[tuple[tuple[str, np.ndarray], list[tuple[str, np.ndarray | None]]]]:
    data = _loadmat(path, CUHK_LAYOUT, f"TestG{size}")[f"TestG{size}"].ravel()
    out = []
    for item in data:
        query = item["Query"].ravel()[0]
        q = (_text(query["imname"]), _xywh_to_xyxy(query["idlocate"])[0])
        gallery = []
        for entry in item["Gallery"].ravel():
            loc = np.asarray(entry["idlocate"])
            gallery.append((_text(entry["imname"]), _xywh_to_xyxy(loc)[0] if loc.size else None))
        out.append((q, gallery))
    return out


def read_cuhk_sysu(root: str | Path, check: bool = True) -> PersonSearchData:
    """Read CUHK-SYSU under `root` (the `CUHK-SYSU` folder or its parent)."""
    root = Path(root)
    if (root / "CUHK-SYSU").is_dir():
        root = root / "CUHK-SYSU"
    _need(root / "Image" / "SSM", CUHK_LAYOUT)
    ann = root / "annotation"
    images = _loadmat(ann / "Images.mat", CUHK_LAYOUT, "Img")["Img"].ravel()
    boxes_of: dict[str, np.ndarray] = {}
    for record in images:
        name = _text(record["imname"])
        locs = np.asarray([np.asarray(b["idlocate"], dtype=np.float64).ravel()[:4] for b in record["box"].ravel()])
        locs = locs.reshape(-1, 4)
        locs = locs[(locs[:, 2] > 0) & (locs[:, 3] > 0)]
        if len(locs) == 0:
            raise ValueError(f"{ann / 'Images.mat'}: image {name} has no box with positive size")
        boxes_of[name] = _xywh_to_xyxy(locs)
    pool = {_text(v) for v in _loadmat(ann / "pool.mat", CUHK_LAYOUT, "pool")["pool"].ravel()}
    proto_dir = ann / "test" / "train_test"
    train_pids = {name: np.full(len(b), UNLABELED, dtype=np.int32) for name, b in boxes_of.items()}

    def assign(pids: dict[str, np.ndarray], name: str, box: np.ndarray, pid: int, source: Path) -> None:
        if name not in boxes_of:
            raise ValueError(f"{source}: image {name} is not in {ann / 'Images.mat'}")
        hit = np.flatnonzero((boxes_of[name] == box).all(1))
        if len(hit):
            pids[name][hit[0]] = pid

    train_mat = proto_dir / "Train.mat"
    for index, cell in enumerate(_loadmat(train_mat, CUHK_LAYOUT, "Train")["Train"].ravel()):
        person = cell.ravel()[0] if isinstance(cell, np.ndarray) else cell
        for scene in person["scene"].ravel():
            assign(train_pids, _text(scene["imname"]), _xywh_to_xyxy(scene["idlocate"])[0], index + 1, train_mat)
    sizes = sorted(
        int(m.group(1)) for p in proto_dir.glob("TestG*.mat") if (m := re.fullmatch(r"TestG(\d+)\.mat", p.name))
    )
    if not sizes:
        raise FileNotFoundError(f"no TestG*.mat in {proto_dir}; expected layout: {CUHK_LAYOUT}")
    protocols_raw = {size: _cuhk_protocol(proto_dir / f"TestG{size}.mat", size) for size in sizes}
    base = 50 if 50 in protocols_raw else sizes[0]
    test_pids = {name: np.full(len(b), UNLABELED, dtype=np.int32) for name, b in boxes_of.items()}
    queries = []
    source = proto_dir / f"TestG{base}.mat"
    for index, ((qname, qbox), gallery) in enumerate(protocols_raw[base]):
        assign(test_pids, qname, qbox, index + 1, source)
        for name, box in gallery:
            if box is None:
                break
            assign(test_pids, name, box, index + 1, source)
        queries.append(QueryRecord(str(root / "Image" / "SSM" / qname), qname, 0, qbox, index + 1))
    protocols = {}
    for size, items in protocols_raw.items():
        if len(items) != len(queries):
            raise ValueError(
                f"{proto_dir / f'TestG{size}.mat'} lists {len(items)} queries, TestG{base}.mat {len(queries)}"
            )
        protocols[size] = [gallery for _, gallery in items]
        for qi, gallery in enumerate(protocols[size]):
            if not any(box is not None for _, box in gallery):
                raise ValueError(
                    f"{proto_dir / f'TestG{size}.mat'}: query {qi} ({queries[qi].name}) has no gallery match"
                )
    folder = root / "Image" / "SSM"
    record = lambda name, pids: SceneRecord(str(folder / name), name, 0, boxes_of[name], pids[name])
    train = [record(n, train_pids) for n in sorted(set(boxes_of) - pool)]
    missing = sorted(pool - set(boxes_of))
    if missing:
        raise ValueError(f"{ann / 'pool.mat'} names {missing[0]}, which is not in {ann / 'Images.mat'}")
    gallery = [record(n, test_pids) for n in sorted(pool, key=_natural)]
    data = PersonSearchData("cuhk_sysu", root, train, gallery, queries, protocols)
    if check:
        check_boxes(train + gallery, CUHK_LAYOUT)
    return data


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _prw_cam(name: str) -> int:
    m = re.search(r"c(\d)", name)
    if m is None:
        raise ValueError(f"PRW frame name {name!r} has no camera 'c<digit>'; expected layout: {PRW_LAYOUT}")
    return int(m.group(1))


def read_prw(
    root: str | Path, check: bool = True, unlabeled_train_pids: tuple[int, ...] = (483, 932)
) -> PersonSearchData:
    """Read PRW under `root` (the `PRW-v16.04.20` folder or its parent)."""
    root = Path(root)
    if (root / "PRW-v16.04.20").is_dir():
        root = root / "PRW-v16.04.20"
    _need(root / "frames", PRW_LAYOUT)
    splits = {}
    for split, key in (("train", "img_index_train"), ("test", "img_index_test")):
        names = [_text(v) + ".jpg" for v in _loadmat(root / f"frame_{split}.mat", PRW_LAYOUT, key)[key].ravel()]
        scenes = []
        for name in names:
            path = root / "annotations" / f"{name}.mat"
            data = _loadmat(path, PRW_LAYOUT)
            key_box = next((k for k in ("box_new", "anno_file", "anno_previous") if k in data), None)
            if key_box is None:
                raise ValueError(f"{path}: no 'box_new', 'anno_file' or 'anno_previous' variable")
            rows = np.asarray(data[key_box], dtype=np.float64).reshape(-1, 5)
            pids = rows[:, 0].astype(np.int32)
            pids[pids == -2] = UNLABELED
            if split == "train":
                pids[np.isin(pids, unlabeled_train_pids)] = UNLABELED
            boxes = _xywh_to_xyxy(np.clip(rows[:, 1:], 0, None))
            scenes.append(SceneRecord(str(root / "frames" / name), name, _prw_cam(name), boxes, pids))
        splits[split] = scenes
    info = _need(root / "query_info.txt", PRW_LAYOUT)
    queries = []
    for line_no, raw in enumerate(info.read_bytes().decode().splitlines(), 1):
        parts = raw.strip().split()
        if not parts:
            continue
        if len(parts) != 6:
            raise ValueError(f"{info}:{line_no}: expected 'pid x y w h frame', got {raw!r}")
        x, y, w, h = (float(v) for v in parts[1:5])
        box = np.clip(np.array([x, y, x + w, y + h]).astype(np.int32), 0, None)
        name = parts[5] + ".jpg"
        queries.append(QueryRecord(str(root / "frames" / name), name, _prw_cam(name), box, int(parts[0])))
    names = {s.name for s in splits["test"]}
    for q in queries:
        if q.name not in names:
            raise ValueError(f"{info}: query frame {q.name} is not in frame_test.mat")
        if not any(q.pid in s.pids for s in splits["test"] if s.name != q.name):
            raise ValueError(f"{info}: query pid {q.pid} ({q.name}) appears in no other test frame (no gallery match)")
    data = PersonSearchData("prw", root, splits["train"], splits["test"], queries)
    if check:
        check_boxes(data.train + data.gallery, PRW_LAYOUT)
    return data


READERS = {"cuhk_sysu": read_cuhk_sysu, "prw": read_prw}


def read_person_search(name: str, root: str | Path, check: bool = True) -> PersonSearchData:
    """Read a person-search dataset by name ("cuhk_sysu" or "prw")."""
    if name not in READERS:
        raise ValueError(f"unknown person-search dataset {name!r}; known: {sorted(READERS)}")
    return READERS[name](root, check=check)


class SceneDataset(Dataset):
    """Images of `records` from disk: (image (3, H, W) float in [0, 1], {"boxes", "labels"}, index)."""

    def __init__(self, records: list[SceneRecord], hflip: bool = False, seed: int = 0) -> None:
        self.records, self.hflip, self.seed, self.epoch = records, hflip, seed, 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        with Image.open(r.path) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        boxes = torch.as_tensor(r.boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(r.pids, dtype=torch.long)
        if self.hflip and np.random.default_rng((self.seed, self.epoch, i)).random() < 0.5:
            image = image.flip(-1)
            w = image.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return image, {"boxes": boxes, "labels": labels}, i


def collate_scenes(batch):
    """Lists of images and targets (detection models take lists), and the indices."""
    images, targets, index = zip(*batch)
    return list(images), list(targets), torch.tensor(index)
