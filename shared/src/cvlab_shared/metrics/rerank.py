"""k-reciprocal re-ranking (Zhong et al., CVPR'17) and the k-reciprocal Jaccard distance used for pseudo labels.

Both follow the paper's Sec. 3-4 on sparse data, so memory grows with N * k rather than N^2:

1. k-nearest neighbours of every sample (`cvlab_shared.metrics.knn.knn`: faiss where installed, torch otherwise).
2. k-reciprocal set R(i, k) = {j in N(i, k) : i in N(j, k)} (Eq. 6); robust expansion R*(i) = R(i, k1) plus
   R(c, k1/2) for every candidate c in R(i, k1) whose half-size set shares more than 2/3 of its members with
   R(i, k1) (Eq. 7).
3. Sparse encoding V_i,j = exp(-d(i,j)) normalised over R*(i) (Eq. 8-9), local query expansion: V_i <- mean of V
   over the k2 nearest neighbours of i (Eq. 10).
4. Jaccard distance 1 - sum_j min(V_i,j, V_g,j) / sum_j max(V_i,j, V_g,j) (Eq. 11), computed through an inverted
   index (column -> rows) over the non-zero entries, query rows in blocks.

`k_reciprocal_rerank(q, g, k1=20, k2=6, lambda_value=0.3)`: Zhong's re-ranking on features: d = squared
Euclidean distance divided by its row maximum over query+gallery, k1+1 forward neighbours (self included), final
distance (1 - lambda) * Jaccard + lambda * d (Eq. 12). It equals torchreid's / the official `re_ranking` fed plain
Euclidean distances (which it squares). `expansion="python"` uses round(k1/2)+1 neighbours for the candidate sets
(banker's rounding, the Python versions), `"matlab"` uses round((k1+1)/2) (the official MATLAB re_ranking.m); they
agree for even k1. `iter_rerank_blocks` / `evaluate_reranked` give the same rows block by block, so a large
query x gallery matrix is never held.

`jaccard_distance(features, k1=30, k2=6)`: the variant SpCL / Cluster-Contrast / OpenUnReID feed to DBSCAN:
k1 neighbours including self, d = 2 - 2<x, y> (features L2-normalised beforehand), softmax weights without row
normalisation, no lambda mixing, negatives clipped to 0. Dense N x N output, or a sparse matrix holding only the
pairs with overlapping neighbourhoods (`sparse=True`; every other pair is at distance 1).
`cluster_pseudo_labels(dist, eps, min_samples)`: DBSCAN on a precomputed distance (dense or sparse); -1 = outlier.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cvlab_shared.metrics.knn import knn
from cvlab_shared.metrics.retrieval import _check_modes, _evaluate_blocks, _gallery_labels

EXPANSIONS = ("python", "matlab")


@dataclass
class SparseRows:
    """A sparse N x N matrix as sorted (row, col, value) triples with row and column pointers."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    n: int

    @classmethod
    def build(cls, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int) -> "SparseRows":
        order = torch.argsort(rows * n + cols)
        return cls(rows[order], cols[order], vals[order], n)

    def row_ptr(self) -> torch.Tensor:
        return torch.searchsorted(self.rows, torch.arange(self.n + 1, device=self.rows.device))

    def transposed(self) -> "SparseRows":
        return SparseRows.build(self.cols, self.rows, self.vals, self.n)


def _half_width(k1: int, expansion: str) -> int:
    if expansion == "python":
        return int(np.around(k1 / 2)) + 1
    return int(np.floor((k1 + 1) / 2 + 0.5))


def _reciprocal(ranks: torch.Tensor, width: int, block: int) -> torch.Tensor:
    """mask[i, s] = i is among the first `width` neighbours of ranks[i, s] (Eq. 6)."""
    fwd = ranks[:, :width]
    out = torch.empty_like(fwd, dtype=torch.bool)
    for s in range(0, fwd.shape[0], block):
        rows = torch.arange(s, min(s + block, fwd.shape[0]), device=fwd.device)
        out[rows] = (fwd[fwd[rows]] == rows[:, None, None]).any(-1)
    return out


def _expansion_sets(ranks: torch.Tensor, width: int, half: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R*(i) of Eq. 7 for every row: (indices (N, E) sorted, valid mask (N, E))."""
    n = ranks.shape[0]
    recip, recip_half = _reciprocal(ranks, width, block), _reciprocal(ranks, half, block)
    fwd, fwd_half = ranks[:, :width], ranks[:, :half]
    idx_out, mask_out = [], []
    for s in range(0, n, block):
        f, r = fwd[s : s + block], recip[s : s + block]
        cand, cand_mask = fwd_half[f], recip_half[f] & r[..., None]  # (b, w, h)
        in_r = ((cand[..., None] == f[:, None, None, :]) & r[:, None, None, :]).any(-1) & cand_mask
        size = cand_mask.sum(-1).double()
        accept = cand_mask & (in_r.sum(-1).double() > size * (2.0 / 3.0))[..., None]
        idx = torch.cat([torch.where(r, f, n), torch.where(accept, cand, n).flatten(1)], 1)
        idx = idx.sort(1).values
        dup = torch.zeros_like(idx, dtype=torch.bool)
        dup[:, 1:] = idx[:, 1:] == idx[:, :-1]
        mask = (idx < n) & ~dup
        keep = int(mask.sum(1).max())
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :keep]
        idx_out.append(idx.gather(1, order))
        mask_out.append(mask.gather(1, order))
    width_e = max(t.shape[1] for t in idx_out)
    idx = torch.cat([torch.nn.functional.pad(t, (0, width_e - t.shape[1]), value=n) for t in idx_out])
    mask = torch.cat([torch.nn.functional.pad(m, (0, width_e - m.shape[1]), value=False) for m in mask_out])
    return idx, mask


def _distance_block(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine2":
        return 2.0 - 2.0 * x @ y.T
    return (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None] - 2.0 * x @ y.T).clamp_min_(0.0)


def _encode(
    feats: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor, kind: str, block: int
) -> tuple[SparseRows, torch.Tensor | None]:
    """Sparse V of Eq. 8-9 (row weights sum to 1) and, for Zhong's distance, each row's maximum distance."""
    n = feats.shape[0]
    vals, row_max = [], []
    for s in range(0, n, block):
        full = _distance_block(feats[s : s + block], feats, kind)
        d = full.gather(1, idx[s : s + block].clamp_max(n - 1))
        if kind == "zhong":
            m = full.max(1).values.clamp_min(1e-12)
            row_max.append(m)
            d = d / m[:, None]
        d = d.masked_fill(~mask[s : s + block], float("inf"))
        vals.append(torch.softmax(-d, dim=1))
    v = torch.cat(vals)
    rows = torch.arange(n, device=feats.device)[:, None].expand_as(idx)
    sparse = SparseRows.build(rows[mask], idx[mask], v[mask], n)
    return sparse, (torch.cat(row_max) if row_max else None)


def _gather_rows(v: SparseRows, ptr: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of all entries of rows `which` (any shape) and the position in `which` each came from."""
    which = which.reshape(-1)
    counts = ptr[which + 1] - ptr[which]
    owner = torch.repeat_interleave(torch.arange(len(which), device=which.device), counts)
    starts = torch.repeat_interleave(ptr[which], counts)
    offsets = torch.arange(int(counts.sum()), device=which.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    return starts + offsets, owner


def _query_expansion(v: SparseRows, ranks: torch.Tensor, k2: int, block: int) -> SparseRows:
    """V_i <- mean of V over the k2 nearest neighbours of i (Eq. 10)."""
    if k2 <= 1:
        return v
    ptr = v.row_ptr()
    rows, cols, vals = [], [], []
    for s in range(0, v.n, block):
        nb = ranks[s : s + block, :k2]
        pos, owner = _gather_rows(v, ptr, nb)
        row = s + owner // k2
        key = row * v.n + v.cols[pos]
        uniq, inverse = torch.unique(key, return_inverse=True)
        acc = torch.zeros(len(uniq), dtype=v.vals.dtype, device=v.vals.device).index_add_(0, inverse, v.vals[pos] / k2)
        rows.append(uniq // v.n)
        cols.append(uniq % v.n)
        vals.append(acc)
    return SparseRows(torch.cat(rows), torch.cat(cols), torch.cat(vals), v.n)


def _min_overlap(
    v: SparseRows, by_col: SparseRows, col_ptr: torch.Tensor, rows: torch.Tensor, max_pairs: int = 1 << 24
) -> torch.Tensor:
    """S[i, g] = sum_j min(V[i, j], V[g, j]) for the query rows `rows` against all N rows (dense (len(rows), N))."""
    ptr = v.row_ptr()
    pos, owner = _gather_rows(v, ptr, rows)
    col, val = v.cols[pos], v.vals[pos]
    out = torch.zeros(len(rows) * v.n, dtype=v.vals.dtype, device=v.vals.device)
    per_entry = col_ptr[col + 1] - col_ptr[col]
    bounds = torch.cumsum(per_entry, 0)
    start = 0
    while start < len(col):
        base = int(bounds[start - 1]) if start else 0
        stop = max(
            int(torch.searchsorted(bounds, torch.tensor(base + max_pairs, device=bounds.device), right=True)), start + 1
        )
        sel = slice(start, stop)
        pair_pos, pair_owner = _gather_rows(by_col, col_ptr, col[sel])
        other = by_col.cols[pair_pos]  # by_col is transposed: its cols are the original rows
        contrib = torch.minimum(val[sel][pair_owner], by_col.vals[pair_pos])
        out.index_add_(0, owner[sel][pair_owner] * v.n + other, contrib)
        start = stop
    return out.view(len(rows), v.n)


@dataclass
class _Encoded:
    v: SparseRows
    by_col: SparseRows
    col_ptr: torch.Tensor
    row_max: torch.Tensor | None


def _encode_all(
    feats: torch.Tensor, k1: int, k2: int, width: int, half: int, kind: str, backend: str, block: int
) -> _Encoded:
    n = feats.shape[0]
    k = min(max(width, half, k2), n)
    _, ranks = knn(feats, feats, k, metric="l2", backend=backend)
    ranks = ranks.to(feats.device)
    idx, mask = _expansion_sets(ranks, min(width, k), min(half, k), max(1, block // 4))
    v, row_max = _encode(feats, idx, mask, kind, block)
    v = _query_expansion(v, ranks, k2, block)
    by_col = v.transposed()
    return _Encoded(v, by_col, by_col.row_ptr(), row_max)


def _check_k(k1: int, k2: int, lambda_value: float | None = None) -> None:
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if lambda_value is not None and not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")


def iter_rerank_blocks(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    expansion: str = "python",
    backend: str = "auto",
    block: int = 1024,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Re-ranked distances (query rows `slice`, block (b, n_gallery)) in query blocks; see the module doc."""
    _check_k(k1, k2, lambda_value)
    if expansion not in EXPANSIONS:
        raise ValueError(f"expansion must be one of {EXPANSIONS}, got {expansion!r}")
    nq = query_feats.shape[0]
    feats = torch.cat([query_feats, gallery_feats.to(query_feats.device)]).detach().float()
    enc = _encode_all(feats, k1, k2, k1 + 1, _half_width(k1, expansion), "zhong", backend, block)
    for s in range(0, nq, block):
        rows = torch.arange(s, min(s + block, nq), device=feats.device)
        overlap = _min_overlap(enc.v, enc.by_col, enc.col_ptr, rows)[:, nq:]
        jaccard = 1.0 - overlap / (2.0 - overlap)
        original = _distance_block(feats[rows], feats[nq:], "zhong") / enc.row_max[rows][:, None]
        yield slice(s, s + len(rows)), jaccard * (1.0 - lambda_value) + original * lambda_value


def k_reciprocal_rerank(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    expansion: str = "python",
    backend: str = "auto",
    block: int = 1024,
) -> torch.Tensor:
    """The re-ranked query x gallery distance matrix (Zhong et al., CVPR'17, Eq. 12)."""
    blocks = iter_rerank_blocks(query_feats, gallery_feats, k1, k2, lambda_value, expansion, backend, block)
    return torch.cat([b for _, b in blocks])


def evaluate_reranked(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    expansion: str = "python",
    backend: str = "auto",
    block: int = 1024,
    ap: str = "standard",
    no_match: str = "skip",
    max_rank: int = 50,
    junk_pids: Sequence[int] = (-1,),
    same_camera_rule: bool = True,
    per_query: bool = False,
) -> dict:
    """`evaluate_retrieval` on re-ranked distances, one query block at a time (no full matrix held). Junk gallery
    items are dropped before re-ranking (as the dataset readers drop them)."""
    _check_modes(ap, no_match)
    g_pids, g_camids, keep = _gallery_labels(g_pids, g_camids, junk_pids, query_feats.device)
    if keep is not None:
        gallery_feats = gallery_feats[keep.to(gallery_feats.device)]
    blocks = iter_rerank_blocks(query_feats, gallery_feats, k1, k2, lambda_value, expansion, backend, block)
    return _evaluate_blocks(
        blocks,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        query_feats.device,
        ap,
        no_match,
        max_rank,
        same_camera_rule,
        per_query,
    )


def jaccard_distance(
    features: torch.Tensor,
    k1: int = 30,
    k2: int = 6,
    backend: str = "auto",
    block: int = 1024,
    sparse: bool = False,
):
    """k-reciprocal Jaccard distance between all rows of (L2-normalised) `features`, as used for pseudo labels.

    Dense (N, N) float tensor on the features' device, or with `sparse=True` a `scipy.sparse.csr_matrix` holding
    only the pairs with distance < 1 (plus the zero diagonal), which DBSCAN takes directly for eps < 1.
    """
    _check_k(k1, k2)
    feats = features.detach().float()
    n = feats.shape[0]
    enc = _encode_all(feats, k1, k2, k1, _half_width(k1, "python"), "cosine2", backend, block)
    if sparse:
        return _sparse_jaccard(enc, n, block)
    out = torch.empty(n, n, dtype=feats.dtype, device=feats.device)
    for s in range(0, n, block):
        rows = torch.arange(s, min(s + block, n), device=feats.device)
        overlap = _min_overlap(enc.v, enc.by_col, enc.col_ptr, rows)
        out[rows] = (1.0 - overlap / (2.0 - overlap)).clamp_min(0.0)
    return out


def _sparse_jaccard(enc: _Encoded, n: int, block: int):
    from scipy import sparse as sp

    rows, cols, vals = [], [], []
    for s in range(0, n, block):
        r = torch.arange(s, min(s + block, n), device=enc.v.vals.device)
        overlap = _min_overlap(enc.v, enc.by_col, enc.col_ptr, r)
        overlap[torch.arange(len(r)), r] = 1.0  # keep the diagonal (distance 0) even if rounding left it short
        nz = overlap.nonzero()
        d = (1.0 - overlap[nz[:, 0], nz[:, 1]] / (2.0 - overlap[nz[:, 0], nz[:, 1]])).clamp_min(0.0)
        rows.append((nz[:, 0] + s).cpu())
        cols.append(nz[:, 1].cpu())
        vals.append(d.cpu())
    r, c, v = torch.cat(rows).numpy(), torch.cat(cols).numpy(), torch.cat(vals).double().numpy()
    return sp.csr_matrix((v, (r, c)), shape=(n, n))


def cluster_pseudo_labels(dist, eps: float = 0.6, min_samples: int = 4, n_jobs: int | None = None) -> np.ndarray:
    """DBSCAN (Ester et al., KDD'96) on a precomputed distance matrix (dense tensor/array or scipy sparse);
    returns one label per sample, -1 for outliers (SpCL / Cluster-Contrast pseudo labelling)."""
    from scipy import sparse as sp
    from sklearn.cluster import DBSCAN

    if isinstance(dist, torch.Tensor):
        dist = dist.detach().cpu().double().numpy()
    if not sp.issparse(dist):
        dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be a square (N, N) distance matrix, got shape {dist.shape}")
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", n_jobs=n_jobs).fit_predict(dist)
