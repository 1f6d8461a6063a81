"""ACLS (Park et al., ICCV 2023): adaptive and conditional label smoothing for network calibration."""

from acls.losses import (
    ACLSLoss,
    AdaptiveFocalLoss,
    CalibrationLoss,
    CrossEntropyLoss,
    FocalLoss,
    LabelSmoothingLoss,
    MbLSLoss,
    build_loss,
)

__all__ = [
    "ACLSLoss",
    "AdaptiveFocalLoss",
    "CalibrationLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LabelSmoothingLoss",
    "MbLSLoss",
    "build_loss",
]
__version__ = "0.1.0"
