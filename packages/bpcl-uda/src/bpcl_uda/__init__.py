"""BPCL (Lee et al., ECCV 2022): bi-directional pixel-prototype contrast for domain-adaptive segmentation."""

from bpcl_uda.losses import PixelPrototypeContrast, entropy_map, release_metric_loss
from bpcl_uda.prototypes import PrototypeMemory, hybrid_pseudo_labels, transfer_labels

__all__ = [
    "PixelPrototypeContrast",
    "PrototypeMemory",
    "entropy_map",
    "hybrid_pseudo_labels",
    "release_metric_loss",
    "transfer_labels",
]
