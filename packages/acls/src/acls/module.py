"""The ACLS LightningModule: the core's calibrated classifier with ACLS as its default training loss."""

from __future__ import annotations

from typing import Any

from acls.losses import ACLSLoss, CalibrationLoss
from cvlab_shared.classification import CalibratedClassifier


class ACLSClassifier(CalibratedClassifier):
    def __init__(self, num_classes: int = 10, loss: CalibrationLoss | None = None, **kwargs: Any) -> None:
        """Image classifier trained with a calibration loss, evaluated before and after temperature scaling.

        Args:
            num_classes: number of classes (must match the datamodule).
            loss: the training loss, e.g. acls.ACLSLoss, acls.MbLSLoss, acls.LabelSmoothingLoss, acls.FocalLoss,
                acls.AdaptiveFocalLoss, acls.CrossEntropyLoss (default: ACLSLoss(num_classes)).
            **kwargs: backbone, optimiser, schedule and evaluation settings of `CalibratedClassifier`.
        """
        super().__init__(num_classes=num_classes, loss=loss if loss is not None else ACLSLoss(num_classes), **kwargs)
