"""NAS-Bench-201 ground truth: test accuracies per cell, read from a CSV or from the official NATS-Bench file.

CSV layout (as in the public `nats_bench.csv`): columns CIFAR10TestAccuracy200Epochs, CIFAR100TestAccuracy200Epochs,
ImageNetTestAccuracy200Epochs, ArchitectureString, one row per cell in NATS-Bench index order. Anything else is
opened with the `nats_bench` package (NATS-Bench TSS file or folder, 200 epochs, seed-averaged test accuracy:
CIFAR-10 `ori-test` after train+valid, CIFAR-100 and ImageNet16-120 `x-test`), when it is installed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from az_nas.spaces.nb201 import format_arch, parse_arch

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
# How the paper scores a cell for each dataset (AZ-NAS NB201 code: the dataset's network and input size):
# (classifier outputs, input resolution). CIFAR-100 differs from CIFAR-10 in the classifier only.
PROTOCOLS: dict[str, tuple[int, int]] = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}
CSV_COLUMNS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "ImageNet16-120": "ImageNetTestAccuracy200Epochs",
}


@dataclass
class NB201Benchmark:
    """Arch strings (benchmark index order) and test accuracy per dataset."""

    archs: list[str]
    accuracy: dict[str, np.ndarray]
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {arch: i for i, arch in enumerate(self.archs)}

    def __len__(self) -> int:
        return len(self.archs)

    def lookup(self, arch: str | tuple[str, ...]) -> int:
        """Benchmark index of a cell (string or six operations)."""
        key = format_arch(parse_arch(arch) if isinstance(arch, str) else arch)
        if key not in self.index:
            raise KeyError(f"cell {key} is not in the benchmark")
        return self.index[key]


def load_benchmark(path: str | Path) -> NB201Benchmark:
    """Ground truth from a CSV (see module docstring) or an official NATS-Bench TSS file (needs `nats_bench`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"benchmark file not found: {path} (expected a CSV with columns {list(CSV_COLUMNS.values())} + "
            "ArchitectureString, or an official NATS-Bench TSS file)"
        )
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    return _load_nats(path)


def _load_csv(path: Path) -> NB201Benchmark:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    needed = [*CSV_COLUMNS.values(), "ArchitectureString"]
    if not rows or any(column not in rows[0] for column in needed):
        have = list(rows[0]) if rows else []
        raise ValueError(f"{path}: expected columns {needed}, found {have}")
    archs = [format_arch(parse_arch(row["ArchitectureString"])) for row in rows]
    accuracy = {name: np.array([float(row[col]) for row in rows]) for name, col in CSV_COLUMNS.items()}
    return NB201Benchmark(archs, accuracy)


def _load_nats(path: Path) -> NB201Benchmark:
    try:
        from nats_bench import create
    except ImportError as error:
        raise ImportError(
            f"{path} is not a CSV; reading an official NATS-Bench file needs `pip install nats_bench`"
        ) from error
    api = create(str(path), "tss", fast_mode=True, verbose=False)
    archs, accuracy = [], {name: [] for name in DATASETS}
    for i in range(len(api)):
        archs.append(format_arch(parse_arch(api.arch(i))))
        for name in DATASETS:
            info = api.get_more_info(i, name, hp="200", is_random=False)
            accuracy[name].append(info["test-accuracy"])
    return NB201Benchmark(archs, {k: np.asarray(v, dtype=np.float64) for k, v in accuracy.items()})
