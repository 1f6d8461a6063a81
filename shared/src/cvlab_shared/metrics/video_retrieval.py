"""Video re-ID evaluation over tracklet features, on the vectorised ranking of `cvlab_shared.metrics.retrieval`.

`evaluate_video(features, pids, camids, query_idx, gallery_idx)` takes one feature per test tracklet and the query
and gallery rows of the test set:

- MARS's official gallery (`gallery_idx=None`): every test tracklet, the queries included; the same-id-same-camera
  rule removes the query itself (and its same-camera copies); junk (pid -1) is dropped from the gallery; distractors
  (pid 0) stay and never match. This is STMN's `Video_Cmc`, torchreid's `eval_market1501` on the same gallery and
  the official MATLAB `evaluation_mars.m` (with `ap="trapezoid"`).
- DukeMTMC-VideoReID / LS-VID: pass the gallery rows.

Returns rank-1/5/10/20, mAP and mINP (`"cmc"`: the CMC curve up to `max_rank`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cvlab_shared.metrics.retrieval import evaluate_retrieval


def evaluate_video(
    features: torch.Tensor,
    pids,
    camids,
    query_idx: Sequence[int],
    gallery_idx: Sequence[int] | None = None,
    metric: str = "cosine",
    ap: str = "standard",
    no_match: str = "skip",
    max_rank: int = 50,
    junk_pids: Sequence[int] = (-1,),
) -> dict:
    """Rank-1/5/10/20, mAP, mINP of tracklet features under the MARS protocol (see the module doc)."""
    features = torch.as_tensor(features)
    n = features.shape[0]
    pids = torch.as_tensor(pids, dtype=torch.long).reshape(-1)
    camids = torch.as_tensor(camids, dtype=torch.long).reshape(-1)
    if len(pids) != n or len(camids) != n:
        raise ValueError(f"{n} tracklet features but {len(pids)} pids and {len(camids)} camids")
    q = torch.as_tensor(list(query_idx), dtype=torch.long)
    g = torch.arange(n) if gallery_idx is None else torch.as_tensor(list(gallery_idx), dtype=torch.long)
    if len(q) == 0 or len(g) == 0:
        raise ValueError("evaluation needs at least one query and one gallery tracklet")
    for name, rows in (("query", q), ("gallery", g)):
        if int(rows.min()) < 0 or int(rows.max()) >= n:
            raise ValueError(f"{name} rows must index the {n} test tracklets")
    missing = sorted(set(pids[q].tolist()) - set(pids[g].tolist()))
    if missing:
        raise ValueError(f"query identities {missing[:10]} have no tracklet in the gallery")
    dev = features.device
    out = evaluate_retrieval(
        features[q.to(dev)],
        features[g.to(dev)],
        pids[q],
        pids[g],
        camids[q],
        camids[g],
        metric=metric,
        ap=ap,
        no_match=no_match,
        max_rank=max_rank,
        junk_pids=junk_pids,
    )
    if len(out["cmc"]) >= 20:
        out["rank20"] = float(out["cmc"][19])
    return out
