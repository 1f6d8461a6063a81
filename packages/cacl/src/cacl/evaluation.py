"""Target test-split evaluation: Market protocol (same id and camera removed), non-interpolated mAP and CMC."""

from __future__ import annotations

import torch

from cvlab_shared.data.reid import ReidRecord


def retrieval_metrics(query: torch.Tensor, gallery: torch.Tensor, q: list[ReidRecord], g: list[ReidRecord]) -> dict[str, float]:
    """mAP, rank-1 and rank-5 of cosine retrieval (features L2-normalised) in the torchreid convention."""
    dist = (1.0 - query @ gallery.T).cpu()
    q_pid, q_cam = torch.tensor([r.pid for r in q]), torch.tensor([r.camid for r in q])
    g_pid, g_cam = torch.tensor([r.pid for r in g]), torch.tensor([r.camid for r in g])
    aps, cmc = [], []
    for i in range(len(q)):
        order = dist[i].argsort()
        valid = ~((g_pid[order] == q_pid[i]) & (g_cam[order] == q_cam[i]))
        match = (g_pid[order] == q_pid[i])[valid].float()
        if match.sum() == 0:
            continue
        hits = match.cumsum(0)
        aps.append(float((hits / torch.arange(1, len(match) + 1) * match).sum() / match.sum()))
        cmc.append((hits > 0).float())
    curve = torch.stack(cmc).mean(0)
    return {"mAP": sum(aps) / len(aps), "rank1": float(curve[0]), "rank5": float(curve[min(4, len(curve) - 1)])}
