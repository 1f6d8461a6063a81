"""CaCL: camera-driven curriculum learning for unsupervised domain adaptive person re-ID (Lee et al., ICCV'23)."""

from cacl.curriculum import (
    CameraCurriculum,
    camera_curriculum,
    camera_mmd,
    cumulative_stages,
    gaussian_mmd2,
    stage_of_epoch,
)
from cacl.losses import CameraDiversityLoss, camera_diversity_loss, camera_diversity_weights
from cacl.memory import ClusterMemory

__version__ = "0.1.0"
__all__ = [
    "CameraCurriculum",
    "CameraDiversityLoss",
    "ClusterMemory",
    "camera_curriculum",
    "camera_diversity_loss",
    "camera_diversity_weights",
    "camera_mmd",
    "cumulative_stages",
    "gaussian_mmd2",
    "stage_of_epoch",
]
