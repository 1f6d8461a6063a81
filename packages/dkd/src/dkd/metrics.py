"""Adapter to the core's segmentation metric: old/new/all mIoU and hIoU of one learning step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class _StepIoU(Metric):
    """TEMPORARY stand-in until cvlab_shared.metrics.segmentation lands: confusion matrix summed over processes."""

    def __init__(self, num_classes: int, old: Sequence[int], new: Sequence[int]) -> None:
        super().__init__()
        self.num_classes, self.old, self.new = num_classes, list(old), list(new)
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        keep = target < self.num_classes
        index = target[keep] * self.num_classes + pred[keep]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict[str, torch.Tensor]:
        cm = self.confusion.double()
        tp = cm.diag()
        iou = 100 * tp / (cm.sum(0) + cm.sum(1) - tp).clamp(min=1)
        old = iou[self.old].mean()
        new = iou[self.new].mean() if self.new else torch.tensor(float("nan"))
        hiou = 2 * old * new / (old + new) if self.new else torch.tensor(float("nan"))
        return {"old": old, "new": new, "all": iou.mean(), "hiou": hiou, "per_class": iou}


def step_metric(num_classes: int, old: Sequence[int], new: Sequence[int]) -> Metric:
    """A stateful metric with update(pred, target) and compute() -> {old, new, all, hiou, per_class}."""
    return _StepIoU(num_classes, old, new)
