"""OIMNet++ (Lee et al., ECCV'22): person search with ProtoNorm and localization-aware OIM on Faster R-CNN parts."""

from oimnet_pp.losses import LOIMLoss, OIMLoss
from oimnet_pp.protonorm import ProtoNorm, prototype_mean

__version__ = "0.1.0"
__all__ = ["LOIMLoss", "OIMLoss", "ProtoNorm", "prototype_mean"]
