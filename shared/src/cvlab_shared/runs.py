"""Where a module writes its results (tables, figures): the run folder, never the current directory.

With a CSV or TensorBoard logger that is the logger's `version_N` folder (beside `metrics.csv`). With no logger, or
a logger without a folder of its own (wandb), it is a new `runs/<name>/version_N` under the logger's save_dir or the
trainer's `default_root_dir`, chosen on rank 0 and broadcast, so every DDP process agrees.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


def next_version(parent: Path) -> Path:
    """Create and return `parent/version_N` with the first N not taken."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = {p.name for p in parent.iterdir()}
    n = 0
    while f"version_{n}" in taken:
        n += 1
    folder = parent / f"version_{n}"
    folder.mkdir()
    return folder


def output_folder(trainer: pl.Trainer, name: str) -> Path:
    """The folder for this run's results; a collective under DDP (every process must call it)."""
    log_dir = trainer.log_dir  # a broadcast: every process asks
    logger = trainer.loggers[0] if trainer.loggers else None
    if isinstance(logger, (CSVLogger, TensorBoardLogger)) and log_dir:
        return Path(log_dir)
    save_dir = getattr(logger, "save_dir", None) if logger is not None else None
    root = Path(save_dir) if save_dir else Path(trainer.default_root_dir) / "runs"
    folder = str(next_version(root / name)) if trainer.is_global_zero else None
    return Path(trainer.strategy.broadcast(folder))
