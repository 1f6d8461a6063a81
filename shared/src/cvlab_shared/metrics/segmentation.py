"""Semantic-segmentation metrics from a confusion matrix: mIoU (all / old / new), hIoU, accuracies, per-class IoU.

`confusion_matrix` counts pixels with one `torch.bincount` on the device of the inputs (rows = ground truth,
columns = prediction); ground-truth values outside [0, num_classes) (e.g. 255) are ignored. All scores are in
percent, like the papers. IoU_c = TP / (TP + FP + FN); old/new as in class-incremental papers (research
segmentation.md section 3.3): old = class 0 and the base classes, new = classes added later, hIoU = 2 old new /
(old + new).

Classes absent from the ground truth, `absent=`:
* "zero" (default; DKD, SSUL): every class is averaged; an absent class scores 0 (its IoU is 0 when it is
  predicted and 0/0 := 0 when not). On a full validation set every class occurs and the conventions agree.
* "present" (Detectron2, ALIFE): IoU is defined only for classes with ground-truth pixels; mIoU = sum of those
  IoUs / number of classes present in the ground truth *or* the prediction; old/new average the defined IoUs.
DKD's evaluator also subtracts 1e-6 in the IoU denominator; we do not (a difference below 1e-4 % on real data).

`SegmentationMetrics` is the torchmetrics object (`update(pred, target)`, `compute()`); its confusion-matrix state
is summed over processes, so results under DDP equal single-process results on the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

ABSENT_CONVENTIONS = ("zero", "present")


# Pixels per bincount on the CPU: the temporaries stay in cache, and at torch's intra-op grain size (32768) each op
# runs on one thread (thread hand-offs per small op cost more than the work, badly so on a busy machine).
CPU_CHUNK = 1 << 15


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[num_classes, num_classes] int64 pixel counts (row = target class, column = predicted class).

    `pred` and `target` hold class ids of the same shape; target pixels equal to `ignore_index` or outside
    [0, num_classes) are skipped; predictions must lie in [0, num_classes). Computed on the device of `target`
    (`pred` is moved there): one bincount of `num_classes * target + pred` on a GPU, in cache-sized chunks on a
    CPU; ignored targets are clamped to num_classes, so their codes fall past the last bin and need no mask.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    target = target.reshape(-1)
    pred = pred.reshape(-1).to(target.device)
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions outside [0, {num_classes})")
    if target.numel() and target.min() < 0:
        target = torch.where(target < 0, num_classes, target)  # negative ids are ignored like 255
    bins = num_classes * num_classes
    counts = torch.zeros(bins, dtype=torch.long, device=target.device)
    chunk = max(pred.numel(), 1) if target.is_cuda else CPU_CHUNK
    for start in range(0, pred.numel(), chunk):
        part_target = target[start : start + chunk].long().clamp(max=num_classes)
        if 0 <= ignore_index < num_classes:
            part_target = torch.where(part_target == ignore_index, num_classes, part_target)
        # ignored targets (now == num_classes) land in bins past num_classes**2, which are dropped
        index = torch.add(pred[start : start + chunk].long(), part_target, alpha=num_classes)
        counts += torch.bincount(index, minlength=bins + num_classes)[:bins]
    return counts.view(num_classes, num_classes)


def _check(absent: str) -> None:
    if absent not in ABSENT_CONVENTIONS:
        raise ValueError(f"absent must be one of {ABSENT_CONVENTIONS}, got {absent!r}")


def iou_from_confusion(confmat: torch.Tensor, absent: str = "zero") -> torch.Tensor:
    """Per-class IoU in percent (float64); classes without ground truth: 0 ("zero") or NaN ("present")."""
    _check(absent)
    confmat = confmat.double()
    tp = confmat.diagonal()
    gt, predicted = confmat.sum(1), confmat.sum(0)
    union = gt + predicted - tp
    iou = 100 * tp / union.clamp_min(1)
    if absent == "present":
        iou = torch.where(gt > 0, iou, torch.nan)
    return iou


def group_mean(iou: torch.Tensor, classes: Sequence[int], absent: str = "zero") -> torch.Tensor:
    """Mean IoU over `classes` (NaN-skipping for "present"); e.g. SYNTHIA's mIoU16 over the 16 classes it has."""
    values = iou[list(classes)]
    return values.nanmean() if absent == "present" else values.mean()


def harmonic_mean(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """hIoU = 2 old new / (old + new), 0 when both are 0."""
    total = old + new
    return torch.where(total > 0, 2 * old * new / total.clamp_min(1e-12), torch.zeros_like(total))


def segmentation_scores(
    confmat: torch.Tensor,
    old_classes: Sequence[int] | None = None,
    new_classes: Sequence[int] | None = None,
    absent: str = "zero",
) -> dict[str, torch.Tensor]:
    """Scalar scores (percent): mIoU, pixel_acc, mean_acc, and with both groups given mIoU_old, mIoU_new, hIoU."""
    iou = iou_from_confusion(confmat, absent)
    confmat = confmat.double()
    gt, predicted = confmat.sum(1), confmat.sum(0)
    recall = 100 * confmat.diagonal() / gt.clamp_min(1)
    if absent == "present":
        miou = iou.nansum() / ((gt > 0) | (predicted > 0)).sum().clamp_min(1)
        mean_acc = recall[gt > 0].mean()
    else:
        miou, mean_acc = iou.mean(), recall.mean()
    scores = {"mIoU": miou, "pixel_acc": 100 * confmat.trace() / confmat.sum().clamp_min(1), "mean_acc": mean_acc}
    if old_classes and new_classes:
        scores["mIoU_old"] = group_mean(iou, old_classes, absent)
        scores["mIoU_new"] = group_mean(iou, new_classes, absent)
        scores["hIoU"] = harmonic_mean(scores["mIoU_old"], scores["mIoU_new"])
    return scores


def iou_table(
    iou: torch.Tensor, names: Sequence[str] | None = None, new_classes: Sequence[int] = (), digits: int = 2
) -> str:
    """A markdown table of per-class IoU (percent), marking the classes in `new_classes`."""
    new = set(new_classes)
    lines = ["| id | class | IoU | group |", "|---:|---|---:|---|"]
    for index, value in enumerate(iou.tolist()):
        name = names[index] if names is not None and index < len(names) else str(index)
        group = "new" if index in new else "old"
        lines.append(f"| {index} | {name} | {value:.{digits}f} | {group} |")
    return "\n".join(lines)


class SegmentationMetrics(Metric):
    """Accumulates a confusion matrix (summed across DDP processes) and reports `segmentation_scores`.

    `update(pred, target)`: `pred` holds class ids [N, H, W] or scores [N, C, H, W] (arg-max taken over dim 1).
    `compute()` returns scalar tensors (percent): mIoU, pixel_acc, mean_acc, and mIoU_old, mIoU_new, hIoU when
    `old_classes` and `new_classes` are given; `per_class_iou()` returns the [num_classes] IoU vector.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        old_classes: Sequence[int] | None = None,
        new_classes: Sequence[int] | None = None,
        ignore_index: int = 255,
        absent: str = "zero",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check(absent)
        self.num_classes = num_classes
        self.old_classes = list(old_classes) if old_classes else None
        self.new_classes = list(new_classes) if new_classes else None
        self.ignore_index = ignore_index
        self.absent = absent
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        self.confmat += confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.confmat.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return segmentation_scores(self.confmat, self.old_classes, self.new_classes, self.absent)

    def per_class_iou(self) -> torch.Tensor:
        """Per-class IoU (percent) over all processes (the state is synced for the call, like `compute`)."""
        with self.sync_context():
            return iou_from_confusion(self.confmat, self.absent)


def incremental_step_scores(metric: SegmentationMetrics) -> dict[str, Any]:
    """Old (background + base classes), new (classes of steps 1..t), all mIoU and hIoU in % of a computed metric,
    then reset it; `new` and `hiou` are None at step 0 (all = old). `per_class` holds the per-class IoU list."""
    scores, per_class = metric.compute(), metric.per_class_iou()
    metric.reset()
    return {
        "old": float(scores.get("mIoU_old", scores["mIoU"])),
        "new": float(scores["mIoU_new"]) if "mIoU_new" in scores else None,
        "all": float(scores["mIoU"]),
        "hiou": float(scores["hIoU"]) if "hIoU" in scores else None,
        "per_class": per_class.tolist(),
    }


def step_log_names(stage: str, result: dict[str, Any]) -> dict[str, float]:
    """The logged names of a step's scores (`<stage>/miou_old|miou_new|miou_all|hiou`), the absent ones left out."""
    names = {"old": "miou_old", "new": "miou_new", "all": "miou_all", "hiou": "hiou"}
    return {f"{stage}/{names[k]}": v for k, v in result.items() if k in names and v is not None}
