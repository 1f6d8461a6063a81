"""Cluster memory with momentum updates (Cluster-Contrast, Dai et al. ACCV'22, eqs. 3-4), correct under DDP.

Each row is the L2-normalised prototype of a class (source identity or target cluster). Logits are cosine
similarities / tau. After every step the prototypes move towards the batch features, c <- m c + (1 - m) f, then are
renormalised. Under DDP every rank first all-gathers the features and labels of all ranks (in rank order), so every
rank applies the same updates and the memories stay identical without any broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cvlab_shared.distributed import all_gather_rows

UPDATES = ("sample", "mean")


class ClusterMemory(nn.Module):
    """Prototype memory: `reset(centroids)`, `logits(features)`, `update(features, labels)`.

    Args:
        feature_dim: feature size.
        temperature: tau in the cosine logits (0.05 in Cluster-Contrast and SpCL).
        momentum: m in c <- m c + (1 - m) f (Cluster-Contrast README 0.1, argparse default 0.2).
        update: "sample" applies the samples one after another in batch order, as Cluster-Contrast does;
            "mean" moves each prototype once towards the mean of its batch features.
    """

    def __init__(
        self, feature_dim: int, temperature: float = 0.05, momentum: float = 0.1, update: str = "sample"
    ) -> None:
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        self.feature_dim, self.temperature, self.momentum, self.update_rule = feature_dim, temperature, momentum, update
        self.register_buffer("features", torch.zeros(0, feature_dim))

    @property
    def num_classes(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def reset(self, centroids: torch.Tensor) -> None:
        """Replace the prototypes by (normalised) centroids, e.g. the cluster means after re-clustering."""
        if centroids.ndim != 2 or centroids.shape[1] != self.feature_dim:
            raise ValueError(f"centroids must be (k, {self.feature_dim}), got {tuple(centroids.shape)}")
        self.features = F.normalize(centroids.detach().float(), dim=1).to(self.features.device)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity to every prototype / tau, (n, num_classes); gradients flow into `features` only."""
        return F.normalize(features, dim=1) @ self.features.detach().clone().T.to(features.dtype) / self.temperature

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Momentum update with the features of every rank (all-gathered); labels < 0 are skipped."""
        feats = all_gather_rows(F.normalize(features.detach().float(), dim=1))
        labels = all_gather_rows(labels.detach().long())
        keep = labels >= 0
        feats, labels = feats[keep], labels[keep]
        if self.update_rule == "sample":
            for f, y in zip(feats, labels):
                self.features[y] = F.normalize(self.momentum * self.features[y] + (1.0 - self.momentum) * f, dim=0)
            return
        for y in torch.unique(labels):
            mean = feats[labels == y].mean(0)
            self.features[y] = F.normalize(self.momentum * self.features[y] + (1.0 - self.momentum) * mean, dim=0)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        """Accept a saved memory of another size (the number of clusters changes between epochs)."""
        key = prefix + "features"
        if key in state_dict:
            self.features = torch.empty_like(state_dict[key], device=self.features.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)


def class_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean feature per class (labels < 0 ignored), (num_classes, d); classes without samples get zeros."""
    keep = labels >= 0
    features, labels = features[keep].float(), labels[keep].long()
    sums = torch.zeros(num_classes, features.shape[1], device=features.device).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).unsqueeze(1).to(sums)
    return sums / counts
