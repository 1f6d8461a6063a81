"""Re-ID retrieval evaluation: CMC, mAP and mINP, computed in query blocks so memory stays bounded.

Protocol (Market-1501, as torchreid / fast-reid / open-reid and the official MATLAB code define it):

- For each query, gallery items with the same pid AND the same camera are removed (same-id-same-camera rule),
  and so are junk items (pid in `junk_pids`, default -1). Pid 0 distractors stay and never match a query.
- Matches are the remaining gallery items with the query's pid.
- `ap="standard"`: non-interpolated AP = mean over the true matches of the precision at their rank (torchreid,
  fast-reid, open-reid). `ap="trapezoid"`: the official Market-1501 / MARS MATLAB `compute_AP.m`, the sum over
  matches of (1/n) * (precision at the previous rank + precision at this rank) / 2 with the precision before
  rank 1 taken as 1; it gives 0.5-1 point lower mAP.
- mINP (Ye et al., TPAMI'21 "Deep Learning for Person Re-identification", Eq. 7): per query
  (number of matches) / (rank of the last match).
- Queries without any valid match: `no_match="skip"` leaves them out (torchreid, fast-reid), `no_match="zero"`
  counts them with AP 0, INP 0 and an all-zero CMC (official MATLAB).

Instead of sorting each gallery row (O(G log G) per query), ranks are found by bucketing every valid gallery
distance among the query's sorted match distances (`searchsorted`, O(G log n_matches)) and counting per bucket:
the rank of the j-th match = number of valid items up to and including it. Ties between a match and a non-match
count the non-match first (pessimistic); with continuous features there are none.

`evaluate_retrieval(features...)` computes the distances block by block (the full query x gallery matrix is never
held) on the features' device; `evaluate_distmat(distmat...)` takes a precomputed matrix (e.g. re-ranked).
`RetrievalEvaluator` is the stateful torchmetrics wrapper, correct under DDP (features gathered across ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

AP_MODES = ("standard", "trapezoid")
NO_MATCH_MODES = ("skip", "zero")
DISTANCES = ("cosine", "euclidean")


def _as_long(values, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long).reshape(-1).to(device)


def pairwise_distance(query: torch.Tensor, gallery: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Distances (smaller = closer): "cosine" = 1 - cos, "euclidean" = squared Euclidean (same ranking)."""
    if metric not in DISTANCES:
        raise ValueError(f"metric must be one of {DISTANCES}, got {metric!r}")
    if metric == "cosine":
        return 1.0 - F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    q, g = query.float(), gallery.float()
    return (q.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1)[None] - 2.0 * q @ g.T).clamp_min_(0.0)


def match_ranks(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    junk_pids: Sequence[int] = (-1,),
    same_camera_rule: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of the true matches of each query row among its valid gallery items.

    Returns `(ranks, num_matches)`: ranks (b, P) sorted ascending, where only the first `num_matches[i]` entries
    of row i are meaningful (P = the block's largest match count).
    """
    same_pid = q_pids[:, None] == g_pids[None]
    invalid = same_pid & (q_camids[:, None] == g_camids[None]) if same_camera_rule else torch.zeros_like(same_pid)
    if len(junk_pids):
        invalid |= torch.isin(g_pids, torch.as_tensor(list(junk_pids), device=g_pids.device))[None]
    positive = same_pid & ~invalid
    num_matches = positive.sum(1)
    width = max(int(num_matches.max()), 1)
    inf = torch.tensor(float("inf"), device=dist.device, dtype=dist.dtype)
    match_dist = torch.where(positive, dist, inf).topk(width, dim=1, largest=False, sorted=True).values
    bucket = torch.searchsorted(match_dist.contiguous(), dist.contiguous())
    bucket.masked_fill_(invalid, width)
    counts = torch.zeros(dist.shape[0], width + 1, dtype=torch.long, device=dist.device)
    counts.scatter_add_(1, bucket, torch.ones_like(bucket))
    return counts[:, :width].cumsum(1), num_matches


def query_scores(ranks: torch.Tensor, num_matches: torch.Tensor, ap: str = "standard", max_rank: int = 50) -> dict[str, torch.Tensor]:
    """Per-query AP, INP and CMC hits (b, max_rank) from `match_ranks` output (zero for queries without matches)."""
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, got {ap!r}")
    ranks_f = ranks.double()
    j = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)[None]
    valid = j <= num_matches[:, None]
    precision = j / ranks_f
    if ap == "trapezoid":
        before = torch.where(ranks_f > 1, (j - 1) / (ranks_f - 1).clamp_min(1), torch.ones_like(ranks_f))
        precision = (before + precision) / 2
    n = num_matches.double().clamp_min(1)
    ap_q = (precision * valid).sum(1) / n
    last = ranks.gather(1, (num_matches - 1).clamp_min(0)[:, None])[:, 0].double()
    inp = torch.where(num_matches > 0, num_matches.double() / last, torch.zeros_like(last))
    first = torch.where(num_matches > 0, ranks[:, 0], torch.full_like(ranks[:, 0], torch.iinfo(torch.long).max))
    cmc = first[:, None] <= torch.arange(1, max_rank + 1, device=ranks.device)[None]
    return {"ap": ap_q, "inp": inp, "cmc": cmc, "valid": num_matches > 0}


def _summarise(parts: list[dict[str, torch.Tensor]], no_match: str, max_rank: int, per_query: bool) -> dict:
    ap = torch.cat([p["ap"] for p in parts]).cpu()
    inp = torch.cat([p["inp"] for p in parts]).cpu()
    cmc = torch.cat([p["cmc"] for p in parts]).cpu().double()
    valid = torch.cat([p["valid"] for p in parts]).cpu()
    num_valid = int(valid.sum())
    keep = valid if no_match == "skip" else torch.ones_like(valid)
    if int(keep.sum()) == 0:
        raise ValueError("no query has a valid gallery match: check pids/camids (same-id-same-camera items are removed)")
    cmc_mean = cmc[keep].mean(0)
    out = {
        "mAP": float(ap[keep].mean()),
        "mINP": float(inp[keep].mean()),
        "cmc": cmc_mean.tolist(),
        "num_queries": len(valid),
        "num_valid_queries": num_valid,
    }
    for r in (1, 5, 10):
        if r <= max_rank:
            out[f"rank{r}"] = float(cmc_mean[r - 1])
    if per_query:
        out["ap"], out["inp"], out["valid"] = ap, inp, valid
    return out


def _check_modes(ap: str, no_match: str) -> None:
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, got {ap!r}")
    if no_match not in NO_MATCH_MODES:
        raise ValueError(f"no_match must be one of {NO_MATCH_MODES}, got {no_match!r}")


def _default_block(gallery_size: int) -> int:
    return max(1, min(4096, (1 << 24) // max(gallery_size, 1)))


def _evaluate_blocks(
    blocks: Iterator[tuple[slice, torch.Tensor]],
    q_pids, g_pids, q_camids, g_camids, device, ap, no_match, max_rank, junk_pids, same_camera_rule, per_query,
) -> dict:
    q_pids, g_pids = _as_long(q_pids, device), _as_long(g_pids, device)
    q_camids, g_camids = _as_long(q_camids, device), _as_long(g_camids, device)
    max_rank = min(max_rank, len(g_pids))
    parts = []
    for rows, dist in blocks:
        ranks, n = match_ranks(dist, q_pids[rows], g_pids, q_camids[rows], g_camids, junk_pids, same_camera_rule)
        parts.append(query_scores(ranks, n, ap, max_rank))
    return _summarise(parts, no_match, max_rank, per_query)


def evaluate_distmat(
    distmat: torch.Tensor,
    q_pids, g_pids, q_camids, g_camids,
    ap: str = "standard",
    no_match: str = "skip",
    max_rank: int = 50,
    junk_pids: Sequence[int] = (-1,),
    same_camera_rule: bool = True,
    block: int | None = None,
    per_query: bool = False,
) -> dict:
    """CMC / mAP / mINP from a query x gallery distance matrix (smaller = closer); see the module doc."""
    _check_modes(ap, no_match)
    distmat = torch.as_tensor(distmat)
    if distmat.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distmat is {tuple(distmat.shape)} but there are {len(q_pids)} queries and {len(g_pids)} gallery items")
    block = block or _default_block(distmat.shape[1])
    blocks = ((slice(s, s + block), distmat[s : s + block]) for s in range(0, distmat.shape[0], block))
    return _evaluate_blocks(blocks, q_pids, g_pids, q_camids, g_camids, distmat.device, ap, no_match, max_rank, junk_pids, same_camera_rule, per_query)


def evaluate_retrieval(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    q_pids, g_pids, q_camids, g_camids,
    metric: str = "cosine",
    ap: str = "standard",
    no_match: str = "skip",
    max_rank: int = 50,
    junk_pids: Sequence[int] = (-1,),
    same_camera_rule: bool = True,
    block: int | None = None,
    per_query: bool = False,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """CMC / mAP / mINP from features, distances computed `block` queries at a time on the features' device.

    Returns {"rank1", "rank5", "rank10", "mAP", "mINP", "cmc" (list, length min(max_rank, gallery)),
    "num_queries", "num_valid_queries"} (+ per-query "ap", "inp", "valid" with `per_query=True`).
    `distance_fn(q_block, gallery)` overrides `metric`.
    """
    _check_modes(ap, no_match)
    if query_feats.ndim != 2 or gallery_feats.ndim != 2 or query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(f"features must be (n, d) and (m, d), got {tuple(query_feats.shape)} and {tuple(gallery_feats.shape)}")
    if len(q_pids) != len(query_feats) or len(g_pids) != len(gallery_feats):
        raise ValueError("one pid per feature row is needed for query and gallery")
    gallery_feats = gallery_feats.to(query_feats.device)
    fn = distance_fn or (lambda q, g: pairwise_distance(q, g, metric))
    block = block or _default_block(gallery_feats.shape[0])
    blocks = ((slice(s, s + block), fn(query_feats[s : s + block], gallery_feats)) for s in range(0, query_feats.shape[0], block))
    return _evaluate_blocks(blocks, q_pids, g_pids, q_camids, g_camids, query_feats.device, ap, no_match, max_rank, junk_pids, same_camera_rule, per_query)


def _cat(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state


class RetrievalEvaluator(Metric):
    """Stateful re-ID evaluation: `update(features, pids, camids, is_query, index=None)`, then `compute()`.

    States are concatenated across processes under DDP (torchmetrics `dist_reduce_fx="cat"`), so every rank
    computes the metrics over the whole query and gallery sets. Pass the dataset `index` of each row to drop the
    duplicates a DistributedSampler pads with (rows with the same (is_query, index) are kept once).
    `compute()` returns `evaluate_retrieval`'s scalars as tensors (rank1, rank5, rank10, mAP, mINP).
    """

    full_state_update = False

    def __init__(self, metric: str = "cosine", ap: str = "standard", no_match: str = "skip", max_rank: int = 50, **kwargs) -> None:
        super().__init__(**kwargs)
        _check_modes(ap, no_match)
        self.metric, self.ap, self.no_match, self.max_rank = metric, ap, no_match, max_rank
        for name in ("feats", "pids", "camids", "is_query", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, feats: torch.Tensor, pids, camids, is_query, index=None) -> None:
        n = feats.shape[0]
        self.feats.append(feats.detach().float())
        self.pids.append(_as_long(pids, feats.device))
        self.camids.append(_as_long(camids, feats.device))
        flag = torch.as_tensor(is_query, dtype=torch.bool, device=feats.device).reshape(-1).expand(n)
        self.is_query.append(flag.clone())
        self.index.append(_as_long(index, feats.device) if index is not None else torch.full((n,), -1, dtype=torch.long, device=feats.device))

    def compute(self) -> dict[str, torch.Tensor]:
        feats, pids, camids = _cat(self.feats), _cat(self.pids), _cat(self.camids)
        is_query, index = _cat(self.is_query), _cat(self.index)
        keep = torch.ones_like(is_query)
        has_index = index >= 0
        if bool(has_index.any()):
            key = index * 2 + is_query.long()
            order = torch.argsort(key[has_index], stable=True)
            sorted_key = key[has_index][order]
            first = torch.ones_like(sorted_key, dtype=torch.bool)
            first[1:] = sorted_key[1:] != sorted_key[:-1]
            kept = torch.zeros_like(first)
            kept[order] = first
            keep[has_index] = kept
        q, g = keep & is_query, keep & ~is_query
        out = evaluate_retrieval(feats[q], feats[g], pids[q], pids[g], camids[q], camids[g], metric=self.metric, ap=self.ap, no_match=self.no_match, max_rank=self.max_rank)
        return {k: torch.tensor(v) for k, v in out.items() if k in ("rank1", "rank5", "rank10", "mAP", "mINP")}
