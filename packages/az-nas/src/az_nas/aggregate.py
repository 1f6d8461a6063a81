"""AZ-NAS non-linear ranking aggregation (eq. 9): s_AZ(i) = sum over proxies M of log(rank_M(i) / m)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy.stats import rankdata

AZ_PROXIES = ("expressivity", "progressivity", "trainability", "complexity")


def proxy_ranks(values: Sequence[float]) -> np.ndarray:
    """Ascending ranks 1..m (ties averaged; NaN counts as -inf, i.e. worst): rank m is the best candidate."""
    array = np.asarray(values, dtype=np.float64)
    array = np.where(np.isnan(array), -np.inf, array)
    return rankdata(array, method="average")


def aggregate(
    scores: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    proxies: Sequence[str] = AZ_PROXIES,
    mode: Literal["log", "linear"] = "log",
) -> np.ndarray:
    """Aggregated score of every candidate (higher is better); `mode="linear"` is the paper's sum-of-ranks ablation.

    `scores` is either {proxy: values per candidate} or a list of per-candidate {proxy: value} records.
    """
    if not isinstance(scores, Mapping):
        records = list(scores)
        scores = {name: [record[name] for record in records] for name in proxies}
    missing = [name for name in proxies if name not in scores]
    if missing:
        raise KeyError(f"scores lack proxies {missing}; have {sorted(scores)}")
    m = len(scores[proxies[0]])
    if m == 0:
        return np.zeros(0)
    total = np.zeros(m)
    for name in proxies:
        if len(scores[name]) != m:
            raise ValueError(f"proxy {name!r} has {len(scores[name])} values, expected {m}")
        ranks = proxy_ranks(scores[name])
        total += np.log(ranks / m) if mode == "log" else ranks / m
    return total
