"""Pseudo labels for the target subset (the core's k-reciprocal Jaccard distance + DBSCAN) and cluster statistics."""

from __future__ import annotations

import torch
from sklearn.metrics import adjusted_rand_score

from cacl.losses import cluster_camera_counts
from cvlab_shared.metrics.rerank import cluster_pseudo_labels, jaccard_distance


SPARSE_ABOVE = 8192


def pseudo_labels(
    features: torch.Tensor, k1: int = 30, k2: int = 6, eps: float = 0.6, min_samples: int = 4
) -> torch.Tensor:
    """DBSCAN on the k-reciprocal Jaccard distance of L2-normalised features; -1 marks outliers (SpCL recipe).

    Above `SPARSE_ABOVE` images the distance is kept sparse (MSMT17's 32k images would need 4 GB dense).
    """
    n = len(features)
    dist = jaccard_distance(
        features.detach().float(), k1=min(k1, n - 1), k2=max(1, min(k2, n - 1)), sparse=n > SPARSE_ABOVE
    )
    labels = cluster_pseudo_labels(dist, eps=eps, min_samples=min_samples)
    return torch.as_tensor(labels, dtype=torch.long, device=features.device)


def cluster_statistics(labels: torch.Tensor, cameras: torch.Tensor, pids: torch.Tensor, weights: torch.Tensor) -> dict:
    """Clusters, outlier fraction, cameras per cluster, multi-camera share, ARI with the true ids, CD weight range."""
    num = int(labels.max()) + 1 if len(labels) and int(labels.max()) >= 0 else 0
    keep = labels >= 0
    stats: dict[str, float | int] = {"images": len(labels), "clusters": num, "outliers": float((~keep).float().mean())}
    if num:
        counts = cluster_camera_counts(labels, cameras, num).float()
        stats["cams_per_cluster"] = float(counts.mean())
        stats["multi_cam"] = float((counts > 1).float().mean())
        stats["ari"] = float(adjusted_rand_score(pids[keep].numpy(), labels[keep].numpy()))
        stats["cd_w_min"], stats["cd_w_max"] = float(weights.min()), float(weights.max())
    return stats
