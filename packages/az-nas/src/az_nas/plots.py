"""Scatter plot of a ranking against ground-truth accuracy (PNG, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import rankdata


def plot_rank_vs_accuracy(scores: np.ndarray, accuracy: np.ndarray, path: str | Path, title: str = "") -> Path:
    """x = rank of each candidate by `scores` (1 = worst), y = its test accuracy; writes `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cvlab_shared.metrics.rank_correlation import kendall_tau

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranks = rankdata(np.where(np.isnan(scores), -np.inf, scores))
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    ax.scatter(ranks, accuracy, s=6, alpha=0.6)
    tau = kendall_tau(scores, accuracy) if len(scores) > 1 else float("nan")
    ax.set_xlabel("AZ-NAS rank (higher = better)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title}  tau={tau:.3f}, n={len(scores)}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
