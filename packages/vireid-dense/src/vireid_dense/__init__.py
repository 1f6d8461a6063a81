"""LbA (Park et al., ICCV'21): visible-infrared person re-ID by learning dense cross-modal correspondences."""

from vireid_dense.cmalign import (
    CMAlign,
    CMAlignOutput,
    DenseTripletLoss,
    cmalign_pairs,
    co_attention_mask,
    dense_triplet_loss,
    matching_probability,
    person_mask,
    reconstruct,
    soft_warp,
)

__version__ = "0.1.0"
__all__ = [
    "CMAlign",
    "CMAlignOutput",
    "DenseTripletLoss",
    "cmalign_pairs",
    "co_attention_mask",
    "dense_triplet_loss",
    "matching_probability",
    "person_mask",
    "reconstruct",
    "soft_warp",
]
