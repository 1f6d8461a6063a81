"""Domain-adaptive segmentation scores on Cityscapes: mIoU over 19 classes, and the SYNTHIA protocols' mIoU16 / mIoU13.

SYNTHIA has no terrain, truck or train (train ids 9, 14, 16): SYNTHIA -> Cityscapes papers report mIoU16 (the other
16 classes) and mIoU13 (additionally without wall, fence, pole: 3, 4, 5), research segmentation.md section 3.4.
"""

from __future__ import annotations

import torch

from cvlab_shared.data.segmentation import SYNTHIA_MIOU13_DROPPED, SYNTHIA_MISSING_TRAINIDS

MIOU16_CLASSES = tuple(c for c in range(19) if c not in SYNTHIA_MISSING_TRAINIDS)
MIOU13_CLASSES = tuple(c for c in MIOU16_CLASSES if c not in SYNTHIA_MIOU13_DROPPED)


def uda_scores(iou: torch.Tensor) -> dict[str, float]:
    """mIoU19, mIoU16, mIoU13 (percent) from a per-class IoU vector of the 19 Cityscapes train ids."""
    if iou.numel() != 19:
        raise ValueError(f"expected 19 per-class IoUs (Cityscapes train ids), got {iou.numel()}")
    iou = iou.double()
    return {
        "mIoU19": float(iou.mean()),
        "mIoU16": float(iou[list(MIOU16_CLASSES)].mean()),
        "mIoU13": float(iou[list(MIOU13_CLASSES)].mean()),
    }
