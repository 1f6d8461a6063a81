"""The OIMNet person-search network."""

from oimnet_pp.models.detector import OIMNet, build_backbone, convert_bn_to_protonorm

__all__ = ["OIMNet", "build_backbone", "convert_bn_to_protonorm"]
