"""Console output for long runs: a live bar on a terminal, one line per epoch when output is a file or pipe."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

import lightning.pytorch as pl
import torch

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


class EpochPrinter(pl.Callback):
    """Prints one line per epoch (rank 0 only) when the live progress bar is off, so logs stay readable."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = (not is_interactive()) if enabled is None else enabled
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._start
        line = format_metrics(trainer.callback_metrics)
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({seconds:.1f}s) {line}", flush=True)


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
