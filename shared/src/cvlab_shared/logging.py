"""Console output and run records: a live bar on a terminal, one line per epoch when output is a file or pipe, a CSV
logger that appends when a run is resumed, and the per-epoch seeding that makes a resumed run exact."""

from __future__ import annotations

import csv
import logging
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

T = TypeVar("T")


def is_interactive() -> bool:
    """True when stdout is a terminal (live progress bars are then welcome)."""
    return sys.stdout.isatty()


def format_metrics(metrics: Mapping[str, object], digits: int = 4) -> str:
    """`name=value` pairs for scalar metrics, in a stable order."""
    parts = []
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, float):
            parts.append(f"{name}={value:.{digits}g}")
        elif isinstance(value, int):
            parts.append(f"{name}={value}")
    return " ".join(parts)


def _scalar(value: object) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else None
    return float(value) if isinstance(value, (int, float)) else None


class EpochPrinter(pl.Callback):
    """Prints one line per epoch (rank 0 only) when the live progress bar is off, so logs stay readable.

    Validation metrics appear only on the epochs that ran validation (Lightning keeps the last values around), and
    no line is printed for an epoch this process did not run (the end of the epoch a resumed run starts from).
    `hide` (and the module's `hidden_on_console` attribute) lists metric-name prefixes kept off the screen (they are
    still in metrics.csv).
    """

    def __init__(self, enabled: bool | None = None, hide: tuple[str, ...] = ()) -> None:
        self.enabled = (not is_interactive()) if enabled is None else enabled
        self.hide = tuple(hide)
        self._start: float | None = None
        self._validated = False
        self._val_keys: set[str] = set()
        self._before_val: dict[str, float | None] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._validated = False

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_val = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validated = True
        for name, value in trainer.callback_metrics.items():  # what this validation logged (new or changed)
            if name not in self._before_val or self._before_val[name] != _scalar(value):
                self._val_keys.add(name)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or not trainer.is_global_zero or self._start is None:
            return
        seconds = time.perf_counter() - self._start
        self._start = None
        hide = self.hide + tuple(getattr(pl_module, "hidden_on_console", ()))
        logged = _logged_this_epoch(trainer)
        metrics = {
            k: v
            for k, v in trainer.callback_metrics.items()
            if not k.startswith(hide)
            and (
                (self._validated and k in self._val_keys)
                or (k not in self._val_keys and (logged is None or k in logged))
            )
        }
        line = format_metrics(metrics)
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({seconds:.1f}s) {line}", flush=True)


def _logged_this_epoch(trainer: pl.Trainer) -> set[str] | None:
    """Names logged during this training epoch (Lightning keeps older values in callback_metrics), or None if the
    loop's result collection cannot be read (then every training metric is shown)."""
    try:
        results = trainer.fit_loop.epoch_loop._results
        return {metric.meta.name for _, metric in results.valid_items()}
    except (AttributeError, RuntimeError):
        return None


def epoch_seed(base: int, epoch: int) -> int:
    """The seed of training epoch `epoch` of a run seeded with `base` (a fixed mix, so epochs draw unrelated streams)."""
    return (int(base) * 1_000_003 + 7_919 * (int(epoch) + 1)) % (2**32)


def seed_all(seed: int) -> None:
    """Seed python's `random`, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class EpochSeeder(pl.Callback):
    """Reseeds every random generator (python, numpy, torch, CUDA) at the start of each training epoch from the run's
    seed and the epoch number.

    Whatever ran in between (validation, clustering, checkpointing, or a restart from `last.ckpt` in a new process),
    epoch e then draws the same random numbers (shuffles, augmentation, dropout, mixup), so an interrupted and resumed
    run equals an uninterrupted one. The run's seed is the one `seed_everything` set (`PL_GLOBAL_SEED`), else 0;
    DDP process r adds a fixed offset times r. Samplers with their own seed (shuffle_seed + epoch) are unaffected.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # each DDP process its own stream (augmentation, dropout), the same one again after a restart
        seed = epoch_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)), trainer.current_epoch)
        seed_all((seed + 104_729 * trainer.global_rank) % (2**32))
        # Lightning creates the training iterator (which draws its base seed) before this hook on the first epoch and
        # on the first epoch after a restore, after it otherwise: create it again now so that it always follows the
        # reseeding (the iterator is lazy: nothing was read from the old one).
        loop = trainer.fit_loop
        fresh = trainer.current_epoch > 0 and not getattr(loop, "is_resuming", False) and not loop.epoch_loop.restarting
        fetcher = getattr(loop, "_data_fetcher", None)
        if not fresh and fetcher is not None:
            iter(fetcher)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps an existing metrics.csv (and its columns) and appends to it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger (`save_dir/name/version/metrics.csv`); with `append=True` (a resumed run) the run
    folder's metrics.csv is continued instead of replaced."""

    def __init__(
        self,
        save_dir: str = "runs",
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        append: bool = False,
    ) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix, flush_logs_every_n_steps=flush_logs_every_n_steps)
        self.append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        writer = _AppendingWriter if self.append else ExperimentWriter
        self._experiment = writer(log_dir=self.log_dir)
        return self._experiment


class _DropTips(logging.Filter):
    """Lightning's promotional tips are not about the user's run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def quiet_lightning() -> None:
    """Drop Lightning's promotional tips from the console (idempotent)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every: float = 10.0) -> Iterator[T]:
    """Iterate with progress: a carriage-return counter on a terminal, a line every `every` seconds otherwise."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    interactive = is_interactive()
    start = last = time.perf_counter()
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if interactive or now - last >= every or count == total:
            rate = count / max(now - start, 1e-9)
            of = f"/{total}" if total else ""
            text = f"{desc} {count}{of} ({rate:.1f}/s, {now - start:.0f}s)"
            print(("\r" + text) if interactive else text, end="" if interactive else "\n", flush=True)
            last = now
    if interactive and count:
        print(flush=True)
