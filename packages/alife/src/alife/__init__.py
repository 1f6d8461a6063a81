"""ALIFE (Oh, Baek, Ham, NeurIPS 2022): adaptive logit regularizer and feature replay for incremental segmentation."""

from alife.losses import ALILoss, ReplayLoss, ali_loss, ali_map, init_like_mib, kd_loss, kd_map
from alife.memory import FeatureMemory
from alife.rotation import CayleyRotation, rotation_objective

__all__ = ["ALILoss", "CayleyRotation", "FeatureMemory", "ReplayLoss", "ali_loss", "ali_map", "init_like_mib",
           "kd_loss", "kd_map", "rotation_objective"]
