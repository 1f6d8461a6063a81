"""RankMixup (Noh, Park, Lee, Ham, ICCV 2023): calibrate a classifier by ranking raw samples above their mixups."""

from rankmixup.losses import LossOutput, MixupLoss, MNDCGLoss, MRLLoss
from rankmixup.mixup import MixupBatch, mix, multi_mixup, sample_mixup

__all__ = ["LossOutput", "MixupLoss", "MNDCGLoss", "MRLLoss", "MixupBatch", "mix", "multi_mixup", "sample_mixup"]
