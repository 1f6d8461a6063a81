"""Pseudo labels for the target subset (k-reciprocal Jaccard distance + DBSCAN) and per-stage cluster statistics."""

from __future__ import annotations

import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from cacl.losses import cluster_camera_counts


def jaccard_distance(features: torch.Tensor, k1: int = 30, k2: int = 6) -> torch.Tensor:
    """k-reciprocal Jaccard distance (Zhong et al., CVPR'17, eqs. 7-12; lambda = 0), dense, for small sets."""
    n = len(features)
    k1, k2 = min(k1, n - 1), min(k2, n)
    dist = torch.cdist(features.double(), features.double()).pow(2)
    rank = dist.argsort(dim=1)
    forward = rank[:, : k1 + 1]

    def reciprocal(i: int, k: int) -> torch.Tensor:
        cand = rank[i, : k + 1]
        back = rank[cand, : k + 1]
        return cand[(back == i).any(dim=1)]

    v = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        rec = reciprocal(i, k1)
        expanded = rec
        for j in rec.tolist():
            half = reciprocal(j, int(round(k1 / 2)))
            if len(set(half.tolist()) & set(rec.tolist())) > 2 / 3 * len(half):
                expanded = torch.cat([expanded, half])
        expanded = torch.unique(expanded)
        w = torch.exp(-dist[i, expanded])
        v[i, expanded] = w / w.sum()
    if k2 > 1:
        v = torch.stack([v[forward[i, :k2]].mean(0) for i in range(n)])
    inter = torch.minimum(v.unsqueeze(1), v.unsqueeze(0)).sum(-1)
    union = torch.maximum(v.unsqueeze(1), v.unsqueeze(0)).sum(-1)
    return (1.0 - inter / union.clamp(min=1e-12)).float()


def pseudo_labels(features: torch.Tensor, k1: int = 30, k2: int = 6, eps: float = 0.6, min_samples: int = 4) -> torch.Tensor:
    """DBSCAN on the Jaccard distance of L2-normalised features; -1 marks outliers (Cluster-Contrast / SpCL recipe)."""
    dist = jaccard_distance(features.detach().cpu(), k1, k2).clamp(min=0).numpy()
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
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
