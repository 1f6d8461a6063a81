"""Class-incremental segmentation protocol (MiB/PLOP/SSUL/DKD/ALIFE): task splits, image selection, label masking,
a cached per-image label index, and SSUL's class-balanced replay memory.

Task names are `B-S`: step 0 learns classes 1..B, every later step the next S classes (VOC 19-1, 15-5, 15-1, 10-1,
5-3 with 20 classes; ADE 100-50, 100-10, 50-50, 100-5 with 150). Aliases: `15-5s` = 15-1 (PLOP/ALIFE), `50` = 50-50
(ALIFE). Class 0 (VOC background, ADE "other") is never a task class and is always kept.

Selection (research segmentation.md section 3.2), with C_t the classes of step t and C_{0:t} those seen so far:
* train, overlapped: images whose mask contains a class of C_t;
* train, disjoint: additionally every label of the mask is in C_{0:t} and {0, 255} (no future class);
* test at step t: images containing a class of C_{0:t}.
Masking: training keeps C_t, 0 and 255 and maps every other class to 0 (`train_label_map`); test keeps C_{0:t} and
maps future classes to 0 (PLOP/ALIFE/DKD-VOC) or 255 (MiB, DKD-ADE) (`eval_label_map`).
Metrics count class 0 with the base classes as "old" and every class added after step 0 as "new"
(`IncrementalTask.metric_groups`).

`LabelIndex.build(samples)` reads every mask once, records which label values occur, and caches that boolean
matrix on disk (keyed by the mask paths), so every task/setting/step selection afterwards is a matrix operation.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvlab_shared.data.cache import cache_dir as data_cache_dir
from cvlab_shared.data.segmentation import IGNORE_INDEX, SegmentationDataset, SegSample, Transform, read_label
from cvlab_shared.logging import progress

TASK_ALIASES = {"15-5s": "15-1", "50": "50-50"}
DATASET_NUM_CLASSES = {"voc": 20, "ade": 150}
SETTINGS = ("overlap", "disjoint")
NUM_LABEL_VALUES = 256


@dataclass(frozen=True)
class IncrementalTask:
    """The class schedule of one task: `steps[t]` are the class ids learned at step t (ids 1..num_classes)."""

    name: str
    num_classes: int
    steps: tuple[tuple[int, ...], ...]

    @classmethod
    def from_name(cls, name: str, dataset: str | int = "voc") -> IncrementalTask:
        """`from_name("15-1", "voc")`; `dataset` is 'voc', 'ade' or the number of foreground classes."""
        num_classes = DATASET_NUM_CLASSES[dataset] if isinstance(dataset, str) else int(dataset)
        canonical = TASK_ALIASES.get(name, name)
        match = re.fullmatch(r"(\d+)-(\d+)", canonical)
        if match is None:
            raise ValueError(f"task {name!r} is not of the form 'B-S' (e.g. 15-1) nor an alias {sorted(TASK_ALIASES)}")
        base, size = int(match.group(1)), int(match.group(2))
        if not (0 < base < num_classes and size > 0 and (num_classes - base) % size == 0):
            raise ValueError(f"task {name!r} does not split {num_classes} classes into {base} + blocks of {size}")
        steps = [tuple(range(1, base + 1))]
        steps += [tuple(range(start, start + size)) for start in range(base + 1, num_classes + 1, size)]
        return cls(canonical, num_classes, tuple(steps))

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def _check(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise ValueError(f"task {self.name} has steps 0..{self.num_steps - 1}, got {step}")

    def new_classes(self, step: int) -> list[int]:
        """C_t."""
        self._check(step)
        return list(self.steps[step])

    def old_classes(self, step: int) -> list[int]:
        """C_{0:t-1} (empty at step 0)."""
        self._check(step)
        return [c for classes in self.steps[:step] for c in classes]

    def seen_classes(self, step: int) -> list[int]:
        """C_{0:t}."""
        return self.old_classes(step) + self.new_classes(step)

    def num_outputs(self, step: int) -> int:
        """Channels of the step-t model and classes of its metrics: class 0 plus C_{0:t}."""
        return 1 + len(self.seen_classes(step))

    def metric_groups(self, step: int) -> tuple[list[int], list[int]]:
        """(old, new) for old/new/hIoU: old = 0 and the base classes, new = classes added at steps 1..t."""
        self._check(step)
        return [0, *self.steps[0]], [c for classes in self.steps[1 : step + 1] for c in classes]


def label_map(keep: Collection[int], fill: int) -> np.ndarray:
    """Lookup table keeping `keep`, 0 and 255 and sending every other label value to `fill`."""
    table = np.full(NUM_LABEL_VALUES, fill, dtype=np.uint8)
    for value in (0, IGNORE_INDEX, *keep):
        table[value] = value
    return table


def train_label_map(task: IncrementalTask, step: int, fill: int = 0) -> np.ndarray:
    """Training masks of step t: C_t kept, old and future classes -> `fill` (0, as in MiB/PLOP/DKD/ALIFE)."""
    return label_map(task.new_classes(step), fill)


def eval_label_map(task: IncrementalTask, step: int, fill: int = 0) -> np.ndarray:
    """Test masks of step t: C_{0:t} kept, future classes -> `fill` (0: PLOP/ALIFE/DKD-VOC; 255: MiB/DKD-ADE)."""
    return label_map(task.seen_classes(step), fill)


def _columns(classes: Collection[int]) -> np.ndarray:
    return np.asarray(sorted(classes), dtype=np.int64)


def select_train(presence: np.ndarray, task: IncrementalTask, step: int, setting: str = "overlap") -> np.ndarray:
    """Indices of the training images of step t (`presence`: [N, 256] bool, label value v occurs in image n)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    chosen = presence[:, _columns(task.new_classes(step))].any(axis=1)
    if setting == "disjoint":
        allowed = np.zeros(presence.shape[1], dtype=bool)
        allowed[[0, IGNORE_INDEX, *task.seen_classes(step)]] = True
        chosen &= ~presence[:, ~allowed].any(axis=1)
    return np.flatnonzero(chosen)


def select_eval(presence: np.ndarray, task: IncrementalTask, step: int) -> np.ndarray:
    """Indices of the test images of step t: those containing a class of C_{0:t}."""
    return np.flatnonzero(presence[:, _columns(task.seen_classes(step))].any(axis=1))


def _presence_row(path: Path) -> np.ndarray:
    row = np.zeros(NUM_LABEL_VALUES, dtype=bool)
    values = np.unique(read_label(path))
    if values.max() >= NUM_LABEL_VALUES:
        raise ValueError(f"{path} holds label values >= {NUM_LABEL_VALUES}; map raw ids before indexing")
    row[values] = True
    return row


@dataclass(frozen=True)
class LabelIndex:
    """Which label values occur in each image of a sample list (`presence[n, v]`), computed once and cached."""

    names: tuple[str, ...]
    presence: np.ndarray

    @staticmethod
    def cache_key(samples: Sequence[SegSample]) -> str:
        """Hash of every mask's path, size and modification time: a rewritten mask invalidates the cache."""
        digest = hashlib.sha1()
        for sample in samples:
            stat = sample.mask.stat()
            digest.update(f"{sample.mask}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    @classmethod
    def build(
        cls, samples: Sequence[SegSample], cache_dir: str | Path | None = None, workers: int = 4, use_cache: bool = True
    ) -> LabelIndex:
        """Read every mask (threads), or load `<cache_dir>/<key>.npz` written by an earlier call on the same list
        (default folder: `$CVLAB_CACHE/seg_index`, else `~/.cache/cvlab/seg_index`)."""
        cache = Path(cache_dir) if cache_dir is not None else data_cache_dir("seg_index")
        file = cache / f"{cls.cache_key(samples)}.npz"
        names = tuple(s.name for s in samples)
        if use_cache and file.exists():
            stored = np.load(file)
            presence = np.unpackbits(stored["presence"], axis=1, count=NUM_LABEL_VALUES).astype(bool)
            if presence.shape[0] == len(names):
                return cls(names, presence)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            rows = list(progress(pool.map(_presence_row, [s.mask for s in samples]), len(samples), "label index"))
        presence = np.stack(rows) if rows else np.zeros((0, NUM_LABEL_VALUES), dtype=bool)
        if use_cache:
            cache.mkdir(parents=True, exist_ok=True)
            temporary = file.with_suffix(f".{os.getpid()}.npz")
            np.savez_compressed(temporary, presence=np.packbits(presence, axis=1))
            temporary.replace(file)
        return cls(names, presence)

    def label_sets(self, indices: Sequence[int], keep: Collection[int]) -> list[list[int]]:
        """For each image in `indices`, the classes of `keep` it contains (memory candidates' label lists)."""
        columns = _columns(keep)
        return [columns[self.presence[i, columns]].tolist() for i in indices]


def class_balanced_memory(
    label_sets: Sequence[Collection[int]], classes: Sequence[int], size: int, seed: int = 0
) -> list[int]:
    """SSUL/DKD class-balanced replay memory: positions of at most `size` candidates.

    Candidates and the class order are shuffled once; then classes take turns, each taking the first unused
    candidate that contains it, until `size` are taken or a whole round finds nothing.
    """
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(len(label_sets))]
    class_order = [classes[int(i)] for i in rng.permutation(len(classes))]
    taken: list[int] = []
    while len(taken) < size:
        before = len(taken)
        for cls in class_order:
            position = next((k for k, i in enumerate(order) if cls in label_sets[i]), None)
            if position is not None:
                taken.append(order.pop(position))
            if len(taken) >= size:
                break
        if len(taken) == before:
            break
    return taken


def incremental_datasets(
    train_samples: Sequence[SegSample],
    test_samples: Sequence[SegSample],
    task: IncrementalTask,
    step: int,
    setting: str = "overlap",
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
    test_fill: int = 0,
    memory: Sequence[int] = (),
    cache_dir: str | Path | None = None,
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The (train, test) datasets of step t: selected images with masked labels; `memory` (indices into
    `train_samples`, e.g. from `class_balanced_memory`) is appended to training with the same masking, as DKD-M
    concatenates its memory to the step's training set (an image in both appears twice)."""
    train_index = LabelIndex.build(train_samples, cache_dir)
    test_index = LabelIndex.build(test_samples, cache_dir)
    chosen = select_train(train_index.presence, task, step, setting).tolist() + [int(i) for i in memory]
    train = SegmentationDataset([train_samples[i] for i in chosen], train_transform, train_label_map(task, step))
    tested = select_eval(test_index.presence, task, step)
    test = SegmentationDataset([test_samples[i] for i in tested], test_transform, eval_label_map(task, step, test_fill))
    return train, test
