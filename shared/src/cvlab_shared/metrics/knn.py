"""Exact k-nearest-neighbour search through faiss where it is installed, through torch otherwise (same results).

Metrics: "cosine" (rows L2-normalised, larger is nearer), "ip" (inner product, larger is nearer) and "l2" (squared
Euclidean distance, smaller is nearer, as faiss reports it). The torch path works in query x gallery blocks, so
memory stays bounded for large galleries, and runs on the tensors' device (GPU when they are there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("cosine", "ip", "l2")
BACKENDS = ("auto", "faiss", "torch")


def faiss_available() -> bool:
    """True when an importable faiss with a flat index is installed (faiss-cpu or faiss-gpu)."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "IndexFlatL2")


def _check(query: torch.Tensor, gallery: torch.Tensor, k: int, metric: str, backend: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query and gallery must be (n, d) and (m, d), got {tuple(query.shape)} and {tuple(gallery.shape)}")
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be in [1, {gallery.shape[0]}] (the gallery size), got {k}")


def pairwise_similarity(query: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """Scores where larger is nearer: inner product, or minus the squared Euclidean distance for "l2"."""
    if metric == "l2":
        sq = query.pow(2).sum(1, keepdim=True) + gallery.pow(2).sum(1)[None] - 2.0 * query @ gallery.T
        return -sq.clamp_min_(0.0)
    return query @ gallery.T


def _knn_torch(query: torch.Tensor, gallery: torch.Tensor, k: int, metric: str, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = [], []
    for start in range(0, query.shape[0], block):
        q = query[start : start + block]
        best_v = best_i = None
        for gstart in range(0, gallery.shape[0], block * 4):
            sim = pairwise_similarity(q, gallery[gstart : gstart + block * 4], metric)
            v, i = sim.topk(min(k, sim.shape[1]), dim=1)
            i = i + gstart
            if best_v is not None:
                v, order = torch.cat([best_v, v], 1).topk(k, dim=1)
                i = torch.cat([best_i, i], 1).gather(1, order)
            best_v, best_i = v, i
        values.append(best_v)
        indices.append(best_i)
    v, i = torch.cat(values), torch.cat(indices)
    return (-v if metric == "l2" else v), i


def _knn_faiss(query: torch.Tensor, gallery: torch.Tensor, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    q = query.detach().float().cpu().contiguous().numpy()
    g = gallery.detach().float().cpu().contiguous().numpy()
    index = faiss.IndexFlatL2(g.shape[1]) if metric == "l2" else faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    d, i = index.search(q, k)
    return torch.from_numpy(d).to(query.device), torch.from_numpy(i).to(query.device)


def knn(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    metric: str = "cosine",
    backend: str = "auto",
    block: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` nearest gallery rows of every query row: (scores or squared distances (n, k), indices (n, k)).

    `backend="auto"` uses faiss for CPU tensors when it is installed and torch otherwise (always torch for GPU
    tensors, so the work stays on the device). Rows come sorted nearest first.
    """
    _check(query, gallery, k, metric, backend)
    if metric == "cosine":
        query, gallery = F.normalize(query.float(), dim=1), F.normalize(gallery.float(), dim=1)
    else:
        query, gallery = query.float(), gallery.float()
    use_faiss = backend == "faiss" or (backend == "auto" and query.device.type == "cpu" and faiss_available())
    if use_faiss:
        if not faiss_available():
            raise ImportError("backend='faiss' needs faiss: pip install 'cvlab-shared[cpu]' (or [gpu])")
        return _knn_faiss(query, gallery, k, metric)
    return _knn_torch(query, gallery, k, metric, block)
