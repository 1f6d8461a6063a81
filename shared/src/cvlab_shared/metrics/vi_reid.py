"""Visible-infrared re-ID protocols on top of `cvlab_shared.metrics.retrieval` (same vectorised CMC / mAP / mINP).

- SYSU-MM01 (Wu et al., ICCV'17; AGW/LbA `eval_sysu` = official `get_cmc_multi_cam.m` / `get_map_multi_cam.m`):
  infrared probes (cameras 3, 6) against a visible gallery; a camera-3 probe skips camera-2 gallery items (same
  room); the CMC counts each gallery identity once; probes without any valid match count in the CMC with no hit
  and are left out of mAP / mINP. `evaluate_sysu_trials` averages over random gallery trials (10 by default).
- RegDB (Nguyen et al., Sensors'17; `eval_regdb`): no camera rule; visible->thermal or thermal->visible.

Cameras here are the SYSU file names' 1-based numbers (`cam3` -> 3); records of `cvlab_shared.data.vi_reid`
carry 0-based camids, so pass `camid + 1`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cvlab_shared.metrics.retrieval import evaluate_distmat, evaluate_retrieval

SYSU_EXCLUDED_PAIRS = ((3, 2),)
SCALARS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def _scalars(out: dict) -> dict[str, float]:
    res = {k: float(out[k]) for k in ("mAP", "mINP")}
    for r in (1, 5, 10, 20):
        if r <= len(out["cmc"]):
            res[f"rank{r}"] = float(out["cmc"][r - 1])
    return res


def sysu_kwargs() -> dict:
    """Arguments of `evaluate_retrieval` / `evaluate_distmat` that make the SYSU-MM01 protocol."""
    return {
        "same_camera_rule": False,
        "exclude_camera_pairs": SYSU_EXCLUDED_PAIRS,
        "cmc_unique_ids": True,
        "no_match": "zero_cmc",
    }


def evaluate_sysu(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    q_pids,
    g_pids,
    q_cams,
    g_cams,
    metric: str = "cosine",
    max_rank: int = 20,
) -> dict:
    """One SYSU-MM01 trial from features (cameras 1-based); returns `evaluate_retrieval`'s dictionary."""
    return evaluate_retrieval(
        query_feats, gallery_feats, q_pids, g_pids, q_cams, g_cams, metric=metric, max_rank=max_rank, **sysu_kwargs()
    )


def evaluate_sysu_distmat(distmat: torch.Tensor, q_pids, g_pids, q_cams, g_cams, max_rank: int = 20) -> dict:
    """One SYSU-MM01 trial from a query x gallery distance matrix (cameras 1-based)."""
    return evaluate_distmat(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank, **sysu_kwargs())


def evaluate_sysu_trials(
    query_feats: torch.Tensor,
    q_pids,
    q_cams,
    gallery_of_trial: Callable[[int], tuple[torch.Tensor, Sequence[int], Sequence[int]]],
    trials: int = 10,
    metric: str = "cosine",
    max_rank: int = 20,
) -> dict:
    """Mean (and per-trial) SYSU-MM01 metrics over `trials` galleries; `gallery_of_trial(t)` returns the gallery
    features, pids and 1-based cameras of trial t (e.g. rows of pre-extracted features picked by
    `cvlab_shared.data.vi_reid.sysu_gallery`)."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    per_trial = []
    for t in range(trials):
        g_feats, g_pids, g_cams = gallery_of_trial(t)
        per_trial.append(_scalars(evaluate_sysu(query_feats, g_feats, q_pids, g_pids, q_cams, g_cams, metric, max_rank)))
    mean = {k: sum(p[k] for p in per_trial) / trials for k in per_trial[0]}
    return {**mean, "trials": per_trial}


def evaluate_regdb(
    query_feats: torch.Tensor, gallery_feats: torch.Tensor, q_pids, g_pids, metric: str = "cosine", max_rank: int = 20
) -> dict[str, float]:
    """RegDB (either direction): every other-modality test image is in the gallery, no camera rule."""
    out = evaluate_retrieval(
        query_feats,
        gallery_feats,
        q_pids,
        g_pids,
        [1] * len(q_pids),
        [2] * len(g_pids),
        metric=metric,
        max_rank=max_rank,
        same_camera_rule=False,
    )
    return _scalars(out)
