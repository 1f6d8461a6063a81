"""STMN's training losses (official `loss.py` / STE-NVAN `TripletLoss('soft', True)`): batch-hard triplet with a
soft margin on Euclidean distances, and the official sum of the six terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_margin_triplet_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch-hard soft-margin triplet (Hermans et al. 2017, Eq. 5 with the softplus of Sec. 3.4):
    mean_i log(1 + exp(max_p d(i, p) - min_n d(i, n))) on Euclidean distances."""
    dist = torch.cdist(features.float(), features.float()).clamp_min(1e-12)
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.softplus(hardest_pos - hardest_neg).mean()


def stmn_loss(
    logits_s: torch.Tensor,
    logits_t: torch.Tensor,
    feat_s: torch.Tensor,
    feat_t: torch.Tensor,
    spread_s: torch.Tensor,
    spread_t: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """L = CE_s + CE_t + Trip_s + Trip_t + L_spread^s + L_spread^t (all weights 1, official `main.py`).

    `logits_s` / `feat_s` are frame-averaged (spatial branch), `logits_t` / `feat_t` the sequence ones."""
    parts = {
        "ce_s": F.cross_entropy(logits_s, labels),
        "ce_t": F.cross_entropy(logits_t, labels),
        "trip_s": soft_margin_triplet_loss(feat_s, labels),
        "trip_t": soft_margin_triplet_loss(feat_t, labels),
        "spread_s": spread_s,
        "spread_t": spread_t,
    }
    parts["loss"] = sum(parts.values())
    return parts
