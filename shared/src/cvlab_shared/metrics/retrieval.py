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
- SYSU-MM01 (visible-infrared): `same_camera_rule=False, exclude_camera_pairs=[(3, 2)], no_match="zero_cmc"`
  (infrared cam-3 probes
  skip the visible cam-2 gallery, same room) and `cmc_unique_ids=True` (CMC counts each gallery identity once,
  as the official `get_cmc_multi_cam.m`; mAP and mINP still use every item). RegDB: `same_camera_rule=False`.
- Queries without any valid match: `no_match="skip"` leaves them out (torchreid, fast-reid), `no_match="zero"`
  counts them with AP 0, INP 0 and an all-zero CMC (official MATLAB), `no_match="zero_cmc"` counts them in the
  CMC only (SYSU-MM01: LbA/AGW `eval_sysu` and the official MATLAB).

No argsort and no (queries x gallery) match matrix: invalid items are set to +inf, each query's matches are
gathered through a pid -> gallery inverted index, and a match's rank is 1 + the number of valid items closer than
it. On the CPU (float32) that count needs no row sort: the items closer than a row's farthest match are binned among
the row's matches with one binary search over exact (row, value) integer keys; elsewhere each row's distances are
sorted as values and the matches binary-searched in them. Junk gallery items are dropped before any distance is computed. Ties between a match and a
non-match rank the match first; with continuous features there are none.

`evaluate_retrieval(features...)` computes the distances block by block (the full query x gallery matrix is never
held) on the features' device; `evaluate_distmat(distmat...)` takes a precomputed matrix (e.g. re-ranked).
`RetrievalEvaluator` is the stateful torchmetrics wrapper, correct under DDP (features gathered across ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

AP_MODES = ("standard", "trapezoid")
NO_MATCH_MODES = ("skip", "zero", "zero_cmc")
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


@dataclass
class GalleryIndex:
    """Gallery pids and cameras with an inverted index pid -> gallery positions, so each query's matches are
    gathered directly instead of scanning a (queries x gallery) mask."""

    pids: torch.Tensor
    camids: torch.Tensor
    order: torch.Tensor
    unique_pids: torch.Tensor
    starts: torch.Tensor
    counts: torch.Tensor
    pid_index: torch.Tensor

    @classmethod
    def build(cls, pids: torch.Tensor, camids: torch.Tensor) -> "GalleryIndex":
        order = torch.argsort(pids, stable=True)
        unique_pids, pid_index, counts = torch.unique(pids, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        return cls(pids, camids, order, unique_pids, starts, counts, pid_index)

    def candidates(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gallery positions holding each query's pid: (positions (b, P), mask (b, P))."""
        k = torch.searchsorted(self.unique_pids, q_pids).clamp_max(max(len(self.unique_pids) - 1, 0))
        found = self.unique_pids[k] == q_pids
        count = torch.where(found, self.counts[k], torch.zeros_like(k))
        width = max(int(count.max()), 1)
        slot = torch.arange(width, device=q_pids.device)[None]
        mask = slot < count[:, None]
        pos = (self.starts[k][:, None] + slot).clamp_max(len(self.order) - 1)
        return torch.where(mask, self.order[pos], torch.zeros_like(pos)), mask


def _sort_rows(dist: torch.Tensor) -> torch.Tensor:
    """Row-wise ascending values (NumPy's vectorised sort on the CPU, torch on other devices)."""
    if dist.device.type == "cpu":
        return torch.from_numpy(np.sort(dist.numpy(), axis=1))
    return torch.sort(dist, dim=1).values


def _row_keys(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """int64 keys that sort as (row, float32 value): the row (values come row after row, `counts` per row) in the
    high 32 bits, the value's bits made order-preserving (negative floats' magnitude bits flipped) in the low ones."""
    bits = values.view(np.int32)
    keys = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)
    keys += np.repeat(np.arange(len(counts), dtype=np.int64) << 32, counts)
    return keys


def _count_below(work: torch.Tensor, match_dist: torch.Tensor) -> torch.Tensor:
    """For each row's ascending match distances, how many of the row's distances are strictly smaller (what a
    left binary search in the sorted row gives). Padding (+inf) entries get a value >= every real one.

    CPU float32: no row sort. Only distances below the row's largest finite match can be counted, so those are
    taken out (a fraction of the gallery in practice), each is binned among its row's matches with one global
    binary search over exact (row, value) integer keys, and the per-row bin counts are cumulated."""
    if work.device.type != "cpu" or work.dtype != torch.float32 or match_dist.shape[1] == 0:
        return torch.searchsorted(_sort_rows(work).to(work.device), match_dist.contiguous())
    d, m = work.numpy(), match_dist.numpy()
    finite = np.isfinite(m)
    out = np.full(m.shape, d.shape[1], dtype=np.int64)
    if not finite.any():
        return torch.from_numpy(out)
    n_fin = finite.sum(1)
    below = d < np.where(finite, m, -np.inf).max(1)[:, None]
    keys = _row_keys(d[below], np.count_nonzero(below, axis=1))
    match_keys = _row_keys(np.ascontiguousarray(m[finite]), n_fin)
    # an element's bin: its row's first match > it (never past the row's last match, which is > it)
    counts = np.bincount(np.searchsorted(match_keys, keys, side="right"), minlength=len(match_keys))
    total = np.cumsum(counts[: len(match_keys)])
    row_start = np.cumsum(n_fin) - n_fin
    before_row = np.where(row_start > 0, total[np.maximum(row_start - 1, 0)], 0)
    out[finite] = total - np.repeat(before_row, n_fin)
    return torch.from_numpy(out)


def match_ranks(
    dist: torch.Tensor,
    q_pids: torch.Tensor,
    q_camids: torch.Tensor,
    gallery: GalleryIndex,
    same_camera_rule: bool = True,
    exclude_camera_pairs: Sequence[tuple[int, int]] = (),
    invalid_cols: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-based ranks of each query's true matches among its valid gallery items (`invalid_cols`: gallery columns
    that never count, e.g. junk items left in a precomputed matrix).

    Invalid items (same pid and camera; gallery cameras excluded for the query camera) get distance +inf, each row
    is sorted, and each match's rank is found by binary search of its distance. Returns `(ranks, num_matches,
    valid_dist)`: ranks (b, P) ascending, meaningful for the first `num_matches[i]` entries of row i, and the
    block's distances with invalid items at +inf.
    """
    work = dist.clone()
    if invalid_cols is not None:
        work[:, invalid_cols] = float("inf")
    pos, in_pid = gallery.candidates(q_pids)
    cand_cams = gallery.camids[pos]
    bad = in_pid & (cand_cams == q_camids[:, None]) if same_camera_rule else torch.zeros_like(in_pid)
    for q_cam, g_cam in exclude_camera_pairs:
        work.masked_fill_((q_camids == q_cam)[:, None] & (gallery.camids == g_cam)[None], float("inf"))
        bad |= in_pid & (q_camids == q_cam)[:, None] & (cand_cams == g_cam)
    rows, slots = bad.nonzero(as_tuple=True)
    work[rows, pos[rows, slots]] = float("inf")
    positive = in_pid & ~bad
    match_dist = torch.where(
        positive, work.gather(1, pos), torch.tensor(float("inf"), dtype=work.dtype, device=work.device)
    )
    match_dist = match_dist.sort(1).values
    left = _count_below(work, match_dist)
    j = torch.arange(left.shape[1], device=left.device)[None]
    ranks = torch.cummax(left - j, dim=1).values + j + 1
    return ranks, positive.sum(1), work


def first_match_identity_rank(valid_dist: torch.Tensor, q_pids: torch.Tensor, gallery: GalleryIndex) -> torch.Tensor:
    """Rank of the first true match when each gallery identity is counted once (SYSU-MM01 CMC): 1 + the number of
    distinct identities among the valid items ranked before it."""
    pos, in_pid = gallery.candidates(q_pids)
    first = valid_dist.gather(1, pos).masked_fill(~in_pid, float("inf")).min(1).values
    before = valid_dist < first[:, None]
    seen = torch.zeros(valid_dist.shape[0], len(gallery.unique_pids), dtype=torch.int32, device=valid_dist.device)
    seen.scatter_add_(1, gallery.pid_index[None].expand_as(before), before.int())
    return (seen > 0).sum(1) + 1


def query_scores(
    ranks: torch.Tensor,
    num_matches: torch.Tensor,
    ap: str = "standard",
    max_rank: int = 50,
    first_rank: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-query AP, INP and CMC hits (b, max_rank) from `match_ranks` output (zero for queries without matches).
    `first_rank` replaces the first match's rank for the CMC only (identity-deduplicated CMC)."""
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
    first = ranks[:, 0] if first_rank is None else first_rank
    first = torch.where(num_matches > 0, first, torch.full_like(first, torch.iinfo(torch.long).max))
    cmc = first[:, None] <= torch.arange(1, max_rank + 1, device=ranks.device)[None]
    return {"ap": ap_q, "inp": inp, "cmc": cmc, "valid": num_matches > 0}


def _summarise(parts: list[dict[str, torch.Tensor]], no_match: str, max_rank: int, per_query: bool) -> dict:
    ap = torch.cat([p["ap"] for p in parts]).cpu()
    inp = torch.cat([p["inp"] for p in parts]).cpu()
    cmc = torch.cat([p["cmc"] for p in parts]).cpu().double()
    valid = torch.cat([p["valid"] for p in parts]).cpu()
    num_valid = int(valid.sum())
    keep = valid if no_match == "skip" else torch.ones_like(valid)
    if int(valid.sum()) == 0 and no_match != "zero":
        raise ValueError(
            "no query has a valid gallery match: check pids/camids (same-id-same-camera items are removed)"
        )
    cmc_mean = cmc[keep].mean(0)
    if no_match == "zero_cmc":
        keep = valid
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


def _gallery_labels(
    g_pids, g_camids, junk_pids: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gallery pids / camids as long tensors on `device` with junk pids dropped, as the dataset readers drop them,
    and the gallery columns kept (None: all), for the caller to select the same columns of its features/distances."""
    g_pids, g_camids = _as_long(g_pids, device), _as_long(g_camids, device)
    if not len(junk_pids):
        return g_pids, g_camids, None
    keep = ~torch.isin(g_pids, torch.as_tensor(list(junk_pids), device=device))
    if bool(keep.all()):
        return g_pids, g_camids, None
    keep = keep.nonzero()[:, 0]
    return g_pids[keep], g_camids[keep], keep


def _evaluate_blocks(
    blocks: Iterator[tuple[slice, torch.Tensor]],
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    device,
    ap,
    no_match,
    max_rank,
    same_camera_rule,
    per_query,
    exclude_camera_pairs: Sequence[tuple[int, int]] = (),
    cmc_unique_ids: bool = False,
    invalid_cols: torch.Tensor | None = None,
) -> dict:
    """Metrics over query blocks; `g_pids` / `g_camids` must already exclude junk (see `_gallery_labels`), or
    junk columns are named in `invalid_cols` and their pids are a value no query has."""
    q_pids, q_camids = _as_long(q_pids, device), _as_long(q_camids, device)
    gallery = GalleryIndex.build(_as_long(g_pids, device), _as_long(g_camids, device))
    max_rank = min(max_rank, len(gallery.pids) - (0 if invalid_cols is None else len(invalid_cols)))
    parts = []
    for rows, dist in blocks:
        qp, qc = q_pids[rows], q_camids[rows]
        ranks, n, valid_dist = match_ranks(dist, qp, qc, gallery, same_camera_rule, exclude_camera_pairs, invalid_cols)
        first = first_match_identity_rank(valid_dist, qp, gallery) if cmc_unique_ids else None
        parts.append(query_scores(ranks, n, ap, max_rank, first))
    return _summarise(parts, no_match, max_rank, per_query)


def evaluate_distmat(
    distmat: torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    ap: str = "standard",
    no_match: str = "skip",
    max_rank: int = 50,
    junk_pids: Sequence[int] = (-1,),
    same_camera_rule: bool = True,
    block: int | None = None,
    per_query: bool = False,
    exclude_camera_pairs: Sequence[tuple[int, int]] = (),
    cmc_unique_ids: bool = False,
) -> dict:
    """CMC / mAP / mINP from a query x gallery distance matrix (smaller = closer); see the module doc."""
    _check_modes(ap, no_match)
    distmat = torch.as_tensor(distmat).detach()
    if distmat.shape != (len(q_pids), len(g_pids)):
        raise ValueError(
            f"distmat is {tuple(distmat.shape)} but there are {len(q_pids)} queries and {len(g_pids)} gallery items"
        )
    # junk columns stay in the matrix (no column copy) and are set to +inf in each block's working copy
    g_pids, g_camids = _as_long(g_pids, distmat.device), _as_long(g_camids, distmat.device)
    junk = torch.isin(g_pids, torch.as_tensor(list(junk_pids), dtype=torch.long, device=distmat.device))
    invalid_cols = junk.nonzero()[:, 0] if bool(junk.any()) else None
    if invalid_cols is not None:
        g_pids = g_pids.masked_fill(junk, torch.iinfo(torch.long).min)  # a pid no query has
    block = block or _default_block(distmat.shape[1])
    blocks = ((slice(s, s + block), distmat[s : s + block]) for s in range(0, distmat.shape[0], block))
    return _evaluate_blocks(
        blocks,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        distmat.device,
        ap,
        no_match,
        max_rank,
        same_camera_rule,
        per_query,
        exclude_camera_pairs,
        cmc_unique_ids,
        invalid_cols,
    )


def evaluate_retrieval(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    metric: str = "cosine",
    ap: str = "standard",
    no_match: str = "skip",
    max_rank: int = 50,
    junk_pids: Sequence[int] = (-1,),
    same_camera_rule: bool = True,
    block: int | None = None,
    per_query: bool = False,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    exclude_camera_pairs: Sequence[tuple[int, int]] = (),
    cmc_unique_ids: bool = False,
) -> dict:
    """CMC / mAP / mINP from features, distances computed `block` queries at a time on the features' device.

    Returns {"rank1", "rank5", "rank10", "mAP", "mINP", "cmc" (list, length min(max_rank, gallery)),
    "num_queries", "num_valid_queries"} (+ per-query "ap", "inp", "valid" with `per_query=True`).
    `distance_fn(q_block, gallery)` overrides `metric`.
    """
    _check_modes(ap, no_match)
    if query_feats.ndim != 2 or gallery_feats.ndim != 2 or query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(
            f"features must be (n, d) and (m, d), got {tuple(query_feats.shape)} and {tuple(gallery_feats.shape)}"
        )
    if len(q_pids) != len(query_feats) or len(g_pids) != len(gallery_feats):
        raise ValueError("one pid per feature row is needed for query and gallery")
    query_feats, gallery_feats = query_feats.detach(), gallery_feats.detach().to(query_feats.device)
    g_pids, g_camids, keep = _gallery_labels(g_pids, g_camids, junk_pids, query_feats.device)
    if keep is not None:
        gallery_feats = gallery_feats[keep]
    fn = distance_fn or (lambda q, g: pairwise_distance(q, g, metric))
    block = block or _default_block(gallery_feats.shape[0])
    blocks = (
        (slice(s, s + block), fn(query_feats[s : s + block], gallery_feats))
        for s in range(0, query_feats.shape[0], block)
    )
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
        exclude_camera_pairs,
        cmc_unique_ids,
    )


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

    def __init__(
        self, metric: str = "cosine", ap: str = "standard", no_match: str = "skip", max_rank: int = 50, **kwargs
    ) -> None:
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
        self.index.append(
            _as_long(index, feats.device)
            if index is not None
            else torch.full((n,), -1, dtype=torch.long, device=feats.device)
        )

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
        out = evaluate_retrieval(
            feats[q],
            feats[g],
            pids[q],
            pids[g],
            camids[q],
            camids[g],
            metric=self.metric,
            ap=self.ap,
            no_match=self.no_match,
            max_rank=self.max_rank,
        )
        return {k: torch.tensor(v) for k, v in out.items() if k in ("rank1", "rank5", "rank10", "mAP", "mINP")}
