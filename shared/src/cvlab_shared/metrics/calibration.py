"""Calibration metrics on logits: ECE, adaptive ECE, class-wise ECE, NLL, accuracy, Brier score.

Pure functions on (logits (N, K), targets (N,)); they run on whatever device the tensors are on. Binning follows
the official calibration code (Guo et al. 2017 / Mukhoti et al. 2020 as used by ACLS and RankMixup, see
calibration.md section 3): 15 equal-width bins by default, a sample with confidence c belongs to the bin
(lower, upper], and a bin's weight is its share of all N samples.

AECE: the official code puts equal-mass edges on the sorted confidences and keeps the (lower, upper] rule, so the
single lowest-confidence sample falls in no bin. By default we count it (the first bin is closed on the left);
`official=True` reproduces the published rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_BINS = 15


def _check(logits: Tensor, targets: Tensor) -> None:
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits (N, K) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("calibration metrics need at least one sample")


def confidences(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(max softmax probability, predicted class) per sample."""
    return F.softmax(logits, dim=1).max(dim=1)


def equal_width_edges(n_bins: int, like: Tensor) -> Tensor:
    """`torch.linspace(0, 1, n_bins + 1)` in float32 (as the official code), cast to the confidences' dtype."""
    return torch.linspace(0, 1, n_bins + 1, device=like.device).to(like.dtype)


def equal_mass_edges(conf: Tensor, n_bins: int) -> Tensor:
    """Edges interpolated on the sorted confidences at positions linspace(0, N, n_bins + 1) (np.interp rule)."""
    ordered = conf.detach().to(torch.float64).sort().values
    n = ordered.numel()
    positions = torch.linspace(0, n, n_bins + 1, dtype=torch.float64, device=conf.device).clamp(max=n - 1)
    low = positions.floor().long()
    high = (low + 1).clamp(max=n - 1)
    edges = ordered[low] + (positions - low) * (ordered[high] - ordered[low])
    return edges.to(conf.dtype)


def bin_statistics(conf: Tensor, correct: Tensor, edges: Tensor, include_lowest: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin (lower, upper]: (count, sum of confidences, sum of correct); `include_lowest` closes the first bin."""
    index = torch.bucketize(conf, edges, right=False) - 1
    if include_lowest:
        index = index.clamp(min=0)
    valid = (index >= 0) & (index < edges.numel() - 1)
    index = index[valid]
    n_bins = edges.numel() - 1
    count = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, index, conf[valid].double())
    correct_sum = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, index, correct[valid].double())
    return count, conf_sum, correct_sum


def _binned_error(conf: Tensor, correct: Tensor, edges: Tensor, include_lowest: bool = False) -> Tensor:
    """sum_b (n_b / N) |mean conf_b - mean correct_b| = sum_b |sum conf_b - sum correct_b| / N."""
    count, conf_sum, correct_sum = bin_statistics(conf, correct, edges, include_lowest)
    return ((conf_sum - correct_sum).abs().sum() / conf.numel()).to(torch.float32)


def ece(logits: Tensor, targets: Tensor, n_bins: int = DEFAULT_BINS) -> Tensor:
    """Expected calibration error with equal-width bins (Guo et al. 2017, eq. 3)."""
    _check(logits, targets)
    conf, pred = confidences(logits)
    return _binned_error(conf, pred.eq(targets), equal_width_edges(n_bins, conf))


def aece(logits: Tensor, targets: Tensor, n_bins: int = DEFAULT_BINS, official: bool = False) -> Tensor:
    """Adaptive ECE: equal-mass bins (Nguyen and O'Connor 2015). `official=True` drops the lowest-confidence sample."""
    _check(logits, targets)
    conf, pred = confidences(logits)
    return _binned_error(conf, pred.eq(targets), equal_mass_edges(conf, n_bins), include_lowest=not official)


def cece(logits: Tensor, targets: Tensor, n_bins: int = DEFAULT_BINS) -> Tensor:
    """Class-wise ECE (Kull et al. 2019): per class k, equal-width ECE of p_k against 1[y = k]; mean over classes.

    The number of classes is logits.shape[1] (the official code infers max(label) + 1, which is the same whenever
    the last class occurs in the targets).
    """
    _check(logits, targets)
    probs = F.softmax(logits, dim=1)
    num_classes = probs.shape[1]
    edges = equal_width_edges(n_bins, probs)
    onehot = F.one_hot(targets, num_classes).to(torch.float64)
    index = torch.bucketize(probs, edges, right=False) - 1
    valid = index >= 0
    flat = (index + n_bins * torch.arange(num_classes, device=probs.device)).clamp(min=0)
    gap = torch.zeros(num_classes * n_bins, dtype=torch.float64, device=probs.device)
    gap.index_add_(0, flat[valid], (probs.double() - onehot)[valid])
    return (gap.abs().view(num_classes, n_bins).sum(1) / probs.shape[0]).mean().to(torch.float32)


def nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood (cross-entropy on logits)."""
    _check(logits, targets)
    return F.cross_entropy(logits, targets)


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Top-1 accuracy as a fraction."""
    _check(logits, targets)
    return logits.argmax(dim=1).eq(targets).float().mean()


def brier(logits: Tensor, targets: Tensor) -> Tensor:
    """Brier score: mean over samples of sum_k (p_k - 1[y = k])^2 (Brier 1950, multi-class form)."""
    _check(logits, targets)
    probs = F.softmax(logits, dim=1)
    return (probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype)).square().sum(1).mean()


def calibration_report(
    logits: Tensor, targets: Tensor, n_bins: int = DEFAULT_BINS, official_aece: bool = False
) -> dict[str, Tensor]:
    """All metrics at once: acc, ece, aece, cece, nll, brier (fractions, as the official logs)."""
    return {
        "acc": accuracy(logits, targets),
        "ece": ece(logits, targets, n_bins),
        "aece": aece(logits, targets, n_bins, official=official_aece),
        "cece": cece(logits, targets, n_bins),
        "nll": nll(logits, targets),
        "brier": brier(logits, targets),
    }
