"""STMN: Spatial and Temporal Memory Networks for video person re-ID (Eom et al., ICCV'21)."""

from stmn.losses import soft_margin_triplet_loss, stmn_loss
from stmn.memory import MemorySpreadLoss, SpatialMemory, TemporalMemory, memory_spread_loss
from stmn.models import STMN, StmnOutput, build_model

__version__ = "0.1.0"
__all__ = [
    "STMN",
    "MemorySpreadLoss",
    "SpatialMemory",
    "StmnOutput",
    "TemporalMemory",
    "build_model",
    "memory_spread_loss",
    "soft_margin_triplet_loss",
    "stmn_loss",
]
