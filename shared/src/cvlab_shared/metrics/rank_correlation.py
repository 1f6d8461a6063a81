"""Rank correlation between predicted scores and ground truth: Kendall tau-b and Spearman rho (ties handled).

Used to judge how well a ranking (e.g. a zero-cost proxy) orders candidates compared with a benchmark.
Non-finite predictions (-inf for a failed score) are kept and rank lowest; NaN is treated as -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _clean(scores: Sequence[float], truth: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(truth, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"scores and truth differ in length: {x.size} vs {y.size}")
    if x.size < 2:
        raise ValueError("rank correlation needs at least 2 items")
    x = np.where(np.isnan(x), -np.inf, x)
    # scipy's tau/rho misbehave with infinities: replace them by ranks, which is all either statistic uses.
    return stats.rankdata(x), stats.rankdata(y)


def kendall_tau(scores: Sequence[float], truth: Sequence[float]) -> float:
    """Kendall tau-b between `scores` and `truth` (1 = same order, -1 = reversed)."""
    x, y = _clean(scores, truth)
    return float(stats.kendalltau(x, y).statistic)


def spearman_rho(scores: Sequence[float], truth: Sequence[float]) -> float:
    """Spearman rho (Pearson correlation of the average ranks)."""
    x, y = _clean(scores, truth)
    return float(stats.spearmanr(x, y).statistic)


def rank_correlations(scores: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """{"kendall_tau": ..., "spearman_rho": ...}."""
    return {"kendall_tau": kendall_tau(scores, truth), "spearman_rho": spearman_rho(scores, truth)}
