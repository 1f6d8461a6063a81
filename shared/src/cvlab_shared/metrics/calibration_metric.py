"""Stateful calibration metrics (torchmetrics): logits and targets are gathered over DDP ranks before computing.

Binned calibration errors are not averages of per-batch values, so the states are the logits themselves
(`dist_reduce_fx="cat"`), as the official evaluators concatenate the whole split before computing.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from cvlab_shared.metrics.calibration import DEFAULT_BINS, calibration_report


class LogitCollector(Metric):
    """Collects (logits, targets); `compute()` returns them concatenated over batches and ranks."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, targets: Tensor) -> None:
        self.logits.append(logits.detach().float())
        self.targets.append(targets.detach().long())

    def _gathered(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.logits), dim_zero_cat(self.targets)

    def compute(self) -> tuple[Tensor, Tensor]:
        return self._gathered()


class CalibrationMetrics(LogitCollector):
    """acc, ece, aece, cece, nll, brier over everything seen since the last reset (see `calibration_report`)."""

    def __init__(self, n_bins: int = DEFAULT_BINS, official_aece: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = n_bins
        self.official_aece = official_aece

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        logits, targets = self._gathered()
        return calibration_report(logits, targets, self.n_bins, self.official_aece)
