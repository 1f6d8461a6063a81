"""Global losses and the learning-rate schedule of LbA (on AGW's recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet (Hermans et al. 2017, Eq. 5; AGW `OriTripletLoss`): for each anchor the farthest positive
    and the closest negative in Euclidean distance (clamped at 1e-12 before the square root), hinge at `margin`,
    averaged over anchors. Modalities are mixed, so positives and negatives are found across them."""
    sq = features.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * features @ features.T).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def lr_factor(epoch: int, warmup_epochs: int = 10, milestones: tuple[int, ...] = (20, 50)) -> float:
    """AGW / LbA schedule: linear warm-up (e + 1) / warmup_epochs, then x0.1 at each milestone."""
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    return 0.1 ** sum(epoch >= m for m in milestones)
