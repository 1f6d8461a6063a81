"""Reliability diagrams as PNG (Guo et al. 2017, figure 1): accuracy per confidence bin against the diagonal."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from cvlab_shared.metrics.calibration import DEFAULT_BINS, bin_statistics, confidences, ece, equal_width_edges


def reliability_diagram(
    panels: Mapping[str, tuple[Tensor, Tensor]], path: str | Path, n_bins: int = DEFAULT_BINS
) -> Path:
    """One panel per (title -> (logits, targets)): bars of accuracy per bin, the gap to the bin's mean confidence,
    and the share of samples per bin. Writes `path` (PNG) and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 5.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for column, (title, (logits, targets)) in enumerate(panels.items()):
        conf, pred = confidences(logits.detach().float().cpu())
        edges = equal_width_edges(n_bins, conf)
        count, conf_sum, correct_sum = (t.numpy() for t in bin_statistics(conf, pred.eq(targets.cpu()), edges))
        centres = ((edges[:-1] + edges[1:]) / 2).numpy()
        width = 1.0 / n_bins
        filled = count > 0
        acc = correct_sum[filled] / count[filled]
        mean_conf = conf_sum[filled] / count[filled]
        top, bottom = axes[0, column], axes[1, column]
        top.bar(centres[filled], acc, width=width, edgecolor="black", color="tab:blue", label="accuracy")
        top.bar(centres[filled], mean_conf - acc, bottom=acc, width=width, color="tab:red", alpha=0.35,
                edgecolor="tab:red", label="gap to confidence")
        top.plot([0, 1], [0, 1], "k--", linewidth=1)
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
                title=f"{title}\nECE {100 * ece(logits.detach().float().cpu(), targets.cpu(), n_bins).item():.2f}%")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(centres, count / max(count.sum(), 1), width=width, color="grey", edgecolor="black")
        bottom.set(xlabel="confidence", ylabel="share")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
