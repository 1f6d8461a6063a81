"""Person re-ID image datasets: readers for the real on-disk layouts, a shared record index, P x K sampling, transforms.

Every reader returns a `ReidSplit(train, query, gallery)` of `ReidRecord(path, pid, camid)` lists:

- `camid` is 0-based (the file names' 1-based camera minus one; PersonX's raw cameras 3,4,8,10,11,12 map to 0..5).
- `pid` is the identity as written in the file name or list file. Junk images (pid -1, Market-1501) are dropped
  by the readers; gallery distractors (pid 0, Market-1501) are kept and never match a query (no query has pid 0).
- Train pids are NOT relabelled by the readers: call `relabel(split.train)` to get contiguous labels 0..N-1.

`root` may be the dataset folder itself (e.g. `.../Market-1501-v15.09.15`) or the folder that holds it.
Layouts (as torchreid / SpCL / Cluster-Contrast expect them):

- Market-1501: `Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/PPPP_cCsS_FFFFFF_BB.jpg`
- DukeMTMC-reID: `DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/PPPP_cC_fFFFFFFF.jpg`
- MSMT17 v1: `MSMT17_V1/{train,test}/PPPP/PPPP_NNN_CC_*.jpg` + `list_{train,val,query,gallery}.txt` ("path pid");
  v2: `MSMT17_V2/{mask_train_v2,mask_test_v2}/...` + the same list files. Train = list_train + list_val.
  A Market-style restructured `MSMT17*/bounding_box_train/...` (Cluster-Contrast) is read as well.
- PersonX: `PersonX/{bounding_box_train,query,bounding_box_test}/PPPP_cC*.jpg`.

`ImageDataset(records, transform)` yields `(image, pid, camid, index)`; `PKSampler` draws P identities x K images
per batch; `reid_transforms(train)` is the standard resize / flip / pad-crop / random-erasing pipeline.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

from cvlab_shared.data.checks import open_rgb
from cvlab_shared.distributed import rank_and_world

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PERSONX_CAMERAS = {3: 0, 4: 1, 8: 2, 10: 3, 11: 4, 12: 5}
MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d+)")


@dataclass(frozen=True)
class ReidRecord:
    """One image: its path, identity (-1 junk, 0 Market distractor) and 0-based camera."""

    path: str
    pid: int
    camid: int


@dataclass
class ReidSplit:
    """The three standard parts of a re-ID dataset."""

    train: list[ReidRecord]
    query: list[ReidRecord]
    gallery: list[ReidRecord]

    def summary(self) -> str:
        """One line per part: images, identities, cameras."""
        lines = []
        for name in ("train", "query", "gallery"):
            recs = getattr(self, name)
            lines.append(
                f"{name:8s} {len(recs):6d} images {len({r.pid for r in recs}):5d} ids "
                f"{len({r.camid for r in recs}):3d} cams"
            )
        return "\n".join(lines)


def _find_dataset_dir(root: str | Path, names: Sequence[str], required: Sequence[str], layout: str) -> Path:
    root = Path(root).expanduser()
    candidates = [root] + [root / n for n in names]
    for folder in candidates:
        if all((folder / r).exists() for r in required):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no {layout} dataset found; expected {layout} with {list(required)} inside one of: {looked}"
    )


def _parse_market_folder(folder: Path, camera_map: dict[int, int] | None = None) -> list[ReidRecord]:
    records = []
    for path in sorted(folder.glob("*.jpg")):
        match = MARKET_PATTERN.match(path.name)
        if match is None:
            raise ValueError(f"cannot parse pid/camera from {path} (expected PPPP_cC...jpg)")
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid == -1:
            continue
        if camera_map is not None:
            if cam not in camera_map:
                raise ValueError(f"{path}: camera {cam} not in the expected set {sorted(camera_map)}")
            camid = camera_map[cam]
        else:
            camid = cam - 1
        records.append(ReidRecord(str(path), pid, camid))
    return records


def _read_market_style(root: str | Path, names: Sequence[str], layout: str, camera_map=None) -> ReidSplit:
    parts = ("bounding_box_train", "query", "bounding_box_test")
    folder = _find_dataset_dir(root, names, parts, layout)
    train, query, gallery = (_parse_market_folder(folder / p, camera_map) for p in parts)
    return ReidSplit(train, query, gallery)


def read_market1501(root: str | Path) -> ReidSplit:
    """Market-1501 (Zheng et al., ICCV'15): junk (-1) dropped, distractors (0000) kept in the gallery."""
    return _read_market_style(root, ("Market-1501-v15.09.15", "Market-1501", "market1501"), "Market-1501")


def read_dukemtmc(root: str | Path) -> ReidSplit:
    """DukeMTMC-reID (Zheng et al., ICCV'17), 8 cameras."""
    return _read_market_style(root, ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid"), "DukeMTMC-reID")


def read_personx(root: str | Path) -> ReidSplit:
    """PersonX (Sun & Zheng, CVPR'19; SpCL/VisDA version); raw cameras 3,4,8,10,11,12 become 0..5."""
    return _read_market_style(root, ("PersonX", "personx"), "PersonX", camera_map=PERSONX_CAMERAS)


def _read_msmt_list(list_file: Path, image_dir: Path) -> list[ReidRecord]:
    records = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rel, label = line.split()
            camid = int(Path(rel).name.split("_")[2]) - 1
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{list_file}:{line_no}: expected 'PPPP/PPPP_NNN_CC_....jpg pid', got {line!r}") from exc
        records.append(ReidRecord(str(image_dir / rel), int(label), camid))
    return records


def read_msmt17(root: str | Path) -> ReidSplit:
    """MSMT17 (Wei et al., CVPR'18), v1 or v2 list files; train merges list_train and list_val (as SpCL does)."""
    root = Path(root).expanduser()
    layouts = (
        ("MSMT17_V1", "train", "test"),
        ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
        ("MSMT17", "train", "test"),
    )
    lists = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
    for name, train_dir, test_dir in layouts:
        for folder in (root, root / name):
            if (folder / train_dir).is_dir() and all((folder / f).is_file() for f in lists):
                train = _read_msmt_list(folder / lists[0], folder / train_dir)
                train += _read_msmt_list(folder / lists[1], folder / train_dir)
                query = _read_msmt_list(folder / lists[2], folder / test_dir)
                gallery = _read_msmt_list(folder / lists[3], folder / test_dir)
                return ReidSplit(train, query, gallery)
    try:
        return _read_market_style(root, ("MSMT17_V1", "MSMT17_V2", "MSMT17"), "MSMT17 (Market-style)")
    except FileNotFoundError:
        pass
    raise FileNotFoundError(
        f"no MSMT17 dataset under {root}: expected MSMT17_V1/{{train,test}}/ or "
        f"MSMT17_V2/{{mask_train_v2,mask_test_v2}}/ "
        f"with {', '.join(lists)}, or a Market-style MSMT17*/{{bounding_box_train,query,bounding_box_test}}/"
    )


READERS: dict[str, Callable[[str | Path], ReidSplit]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "msmt17": read_msmt17,
    "personx": read_personx,
}


def read_reid_dataset(name: str, root: str | Path) -> ReidSplit:
    """Read a dataset by name: one of `READERS` (market1501, dukemtmc, msmt17, personx)."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"market": "market1501", "duke": "dukemtmc", "dukemtmcreid": "dukemtmc", "msmt": "msmt17"}
    key = aliases.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown re-ID dataset {name!r}; known: {sorted(READERS)}")
    return READERS[key](root)


def relabel(records: Sequence[ReidRecord]) -> tuple[list[ReidRecord], dict[int, int]]:
    """Records with pids mapped to 0..N-1 in sorted-pid order, and the mapping raw pid -> label."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [ReidRecord(r.path, mapping[r.pid], r.camid) for r in records], mapping


class ImageDataset(Dataset):
    """Images of a record list: `(image, pid, camid, index)`; `index` is the position in `records`."""

    def __init__(self, records: Sequence[ReidRecord], transform: Callable | None = None) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        image = open_rgb(rec.path)  # a damaged file is named in the error
        if self.transform is not None:
            image = self.transform(image)
        return image, rec.pid, rec.camid, index

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.records]

    @property
    def camids(self) -> list[int]:
        return [r.camid for r in self.records]


class PKSampler(Sampler[int]):
    """P identities x K images per batch (Hermans et al. 2017, "In Defense of the Triplet Loss", Sec. 2).

    Yields flat indices; use it with `DataLoader(batch_size=p * k, sampler=...)`. Each epoch every identity is cut
    into groups of K shuffled images (identities with fewer than K images are sampled with replacement); batches
    take groups from P distinct identities until fewer than P identities have groups left. Labels < 0 (outliers)
    are ignored. Under DDP each process keeps every `num_replicas`-th batch (from `torch.distributed` when it is
    initialised), so switch Lightning's distributed sampler off (`Trainer(use_distributed_sampler=False)`).
    Call `set_epoch(epoch)` for a new order each epoch; the same seed and epoch give the same indices.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            if int(pid) >= 0:
                self.index_by_pid[int(pid)].append(i)
        if len(self.index_by_pid) < p:
            raise ValueError(f"PKSampler needs at least p={p} identities, got {len(self.index_by_pid)}")
        process, processes = rank_and_world()
        self.num_replicas = num_replicas if num_replicas is not None else processes
        self.rank = rank if rank is not None else process
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idx = list(self.index_by_pid[pid])
            if len(idx) < self.k:
                idx = idx + rng.choices(idx, k=self.k - len(idx))
            rng.shuffle(idx)
            groups[pid] = [idx[i : i + self.k] for i in range(0, len(idx) - self.k + 1, self.k)]
        batches = []
        available = [pid for pid in groups if groups[pid]]
        while len(available) >= self.p:
            chosen = rng.sample(available, self.p)
            batches.append([i for pid in chosen for i in groups[pid].pop()])
            available = [pid for pid in available if groups[pid]]
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[self.rank : usable : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        for batch in self._batches():
            yield from batch

    def __len__(self) -> int:
        return len(self._batches()) * self.p * self.k


def reid_transforms(
    train: bool,
    size: tuple[int, int] = (256, 128),
    flip_p: float = 0.5,
    pad: int = 10,
    erasing_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable:
    """Standard re-ID augmentation (Luo et al., "Bag of Tricks", CVPR-W'19): resize, flip, pad + random crop,
    normalise, random erasing (Zhong et al., AAAI'20; erased pixels set to 0, the mean colour after normalisation)
    for training; resize + normalise for testing."""
    if not train:
        return T.Compose([T.Resize(size), T.ToTensor(), T.Normalize(mean, std)])
    steps: list[Callable] = [T.Resize(size), T.RandomHorizontalFlip(flip_p)]
    if pad > 0:
        steps += [T.Pad(pad), T.RandomCrop(size)]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if erasing_p > 0:
        steps.append(T.RandomErasing(p=erasing_p, value=0))
    return T.Compose(steps)
