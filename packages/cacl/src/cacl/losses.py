"""CaCL's target loss: cluster-contrast cross-entropy weighted per cluster by its camera diversity.

Paper (overview and teaser fig. c): a cluster's weight grows with the number of distinct cameras among its members;
the CD loss makes multi-camera clusters "involve more" in learning. The exact formula is not known to us (the full
text was unavailable): we use L_CD = (1/N) sum_i w_{y_i} * CE(logits_i, y_i) with w_k = |cams(k)|^power, normalised
so that the mean weight over clusters is 1 ("mean") or divided by the number of target cameras ("total").
The logits are the cluster memory's cosine logits / tau (Cluster-Contrast, Dai et al. ACCV'22, eq. 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMALIZATIONS = ("mean", "total", "none")


def cluster_camera_counts(labels: torch.Tensor, cameras: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Number of distinct cameras per cluster, (num_clusters,); samples with label < 0 (outliers) are ignored."""
    keep = labels >= 0
    labels, cameras = labels[keep].long(), cameras[keep].long()
    if len(labels) and int(labels.max()) >= num_clusters:
        raise ValueError(f"label {int(labels.max())} out of range for {num_clusters} clusters")
    num_cams = int(cameras.max()) + 1 if len(cameras) else 1
    seen = torch.zeros(num_clusters, num_cams, dtype=torch.bool, device=labels.device)
    seen[labels, cameras] = True
    return seen.sum(1)


def camera_diversity_weights(
    labels: torch.Tensor,
    cameras: torch.Tensor,
    num_clusters: int,
    normalize: str = "mean",
    power: float = 1.0,
    num_cameras: int | None = None,
) -> torch.Tensor:
    """Per-cluster weights w_k = |cams(k)|^power, normalised ("mean": mean 1; "total": / num_cameras^power)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    w = cluster_camera_counts(labels, cameras, num_clusters).float().pow(power)
    if normalize == "mean":
        w = w / w.mean().clamp(min=1e-12)
    elif normalize == "total":
        total = num_cameras if num_cameras is not None else int(torch.unique(cameras[labels >= 0]).numel())
        w = w / float(max(total, 1)) ** power
    return w


def camera_diversity_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i w_{y_i} CE(logits_i, y_i): cross-entropy with each sample weighted by its cluster's weight."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (weights[targets] * ce).mean()


class CameraDiversityLoss(nn.Module):
    """Stateful CD loss: `set_clusters(labels, cameras)` after each re-clustering, then call on (logits, targets).

    `targets` index the cluster weights, i.e. they are target-cluster ids; pass `offset` when the logits hold other
    classes first (the shared classifier puts source classes before target clusters).
    """

    def __init__(self, normalize: str = "mean", power: float = 1.0, enabled: bool = True) -> None:
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.normalize, self.power, self.enabled = normalize, power, enabled
        self.register_buffer("weights", torch.ones(0), persistent=False)

    def set_clusters(self, labels: torch.Tensor, cameras: torch.Tensor, num_clusters: int) -> torch.Tensor:
        """Recompute the per-cluster weights (all ones when disabled, i.e. plain cluster cross-entropy)."""
        if self.enabled:
            w = camera_diversity_weights(labels, cameras, num_clusters, self.normalize, self.power)
        else:
            w = torch.ones(num_clusters)
        self.weights = w.to(self.weights.device)
        return self.weights

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if self.weights.numel() == 0:
            raise RuntimeError("CameraDiversityLoss.set_clusters must be called before the loss is used")
        full = torch.ones(logits.shape[1], device=logits.device, dtype=logits.dtype)
        full[offset : offset + len(self.weights)] = self.weights.to(logits)
        return camera_diversity_loss(logits, targets + offset, full)
