"""RankMixup losses (Noh et al., ICCV 2023): MRL, M-NDCG and the plain mixup baseline.

Every loss takes the same four tensors, so any of them drops into a training loop:

- ``logits`` (B, K): the raw samples' logits;
- ``mixed_logits`` (M*B, K): the logits of M mixed copies of the batch, mixup-major (rows ``m*B .. m*B+B-1`` are
  copy m, whose row i mixes raw sample i with a partner), as :func:`rankmixup.mixup.multi_mixup` produces them;
- ``targets`` (B,): hard labels of the raw samples;
- ``mixed_targets`` (M*B, K): the mixing coefficients as soft labels, lam * onehot(y_i) + (1 - lam) * onehot(y_partner).

Each returns a :class:`LossOutput` (loss, loss_ce, loss_mixup), like the official classes' tuples.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: A mixed sample whose largest soft-label entry is at least this is a self-mix (same-class partner or lam in {0, 1}).
SELF_MIX_TOL = 1e-6


class LossOutput(NamedTuple):
    """Total loss, its cross-entropy term on the raw samples, and the (unweighted) mixup term."""

    loss: Tensor
    loss_ce: Tensor
    loss_mixup: Tensor


def num_copies(logits: Tensor, mixed_logits: Tensor, mixed_targets: Tensor) -> int:
    """M, the number of mixed copies, checked against the shapes (M*B rows of mixed logits and soft labels)."""
    batch = logits.shape[0]
    if logits.dim() != 2 or mixed_logits.dim() != 2 or mixed_logits.shape[1] != logits.shape[1]:
        raise ValueError(f"expected (B, K) logits and (M*B, K) mixed logits, got {tuple(logits.shape)} and "
                         f"{tuple(mixed_logits.shape)}")
    if batch == 0 or mixed_logits.shape[0] % batch or mixed_logits.shape[0] == 0:
        raise ValueError(f"mixed logits have {mixed_logits.shape[0]} rows, not a positive multiple of the batch {batch}")
    if mixed_targets.shape != mixed_logits.shape:
        raise ValueError(f"mixed_targets {tuple(mixed_targets.shape)} must match mixed_logits {tuple(mixed_logits.shape)}")
    return mixed_logits.shape[0] // batch


def self_mix_mask(mixed_targets: Tensor) -> Tensor:
    """1 for a real mix, 0 where the soft label is one-hot (same-class partner or lam in {0, 1}) (RankMixup sec. 3.2).

    The official code tests ``target_re == 1`` exactly; a tolerance keeps same-class pairs masked when
    lam + (1 - lam) rounds below 1 in float32.
    """
    return (mixed_targets.max(dim=1).values < 1.0 - SELF_MIX_TOL).to(mixed_targets.dtype)


def mrl_hinge(logits: Tensor, mixed_logits: Tensor, margin: float) -> Tensor:
    """Per mixed sample [max_k z~_k - max_k z_k + margin]_+ against its own raw sample (RankMixup eq. MRL), on logits."""
    copies = mixed_logits.shape[0] // logits.shape[0]
    raw_max = logits.max(dim=1).values.repeat(copies)
    return F.relu(mixed_logits.max(dim=1).values - raw_max + margin)


def mrl_term(
    logits: Tensor,
    mixed_logits: Tensor,
    mixed_targets: Tensor,
    margin: float = 2.0,
    reduction: Literal["per_sample", "official"] = "per_sample",
) -> Tensor:
    """The MRL ranking term: a raw sample should be more confident than its mixes by `margin` (RankMixup eq. MRL).

    ``per_sample`` (default): mean over all mixed samples of mask * hinge (self-mixes count 0), any number of copies.
    ``official``: the official B x B broadcast of the (B,) mask against the (B, 1) hinge, i.e. mean(mask) * mean(hinge);
    defined for one mixed copy only (the official code raises a shape error with more).
    """
    copies = num_copies(logits, mixed_logits, mixed_targets)
    hinge = mrl_hinge(logits, mixed_logits, margin)
    mask = self_mix_mask(mixed_targets)
    if reduction == "official":
        if copies != 1:
            raise ValueError(f"reduction='official' reproduces the official MRL, which only runs with one mixed copy "
                             f"(got {copies}); use reduction='per_sample'")
        return mask.mean() * hinge.mean()
    if reduction != "per_sample":
        raise ValueError(f"reduction must be 'per_sample' or 'official', got {reduction!r}")
    return (mask * hinge).mean()


def ndcg_per_sample(logits: Tensor, mixed_logits: Tensor, mixed_targets: Tensor) -> Tensor:
    """Per raw sample, NDCG of the list [raw, its M mixes] (RankMixup eq. M-NDCG).

    Gains are max-softmax confidences, ideal gains the relevances (1 for the raw sample, max_k of the soft label for
    a mix); the mixes are ordered by relevance, position j gets the discount 1/log2(j + 2). NDCG = DCG/IDCG when
    IDCG > DCG, else IDCG/DCG, so it penalises over- and under-confidence alike and never exceeds 1.
    """
    copies = num_copies(logits, mixed_logits, mixed_targets)
    batch = logits.shape[0]
    raw_conf = logits.softmax(dim=1).max(dim=1).values
    mixed_conf = mixed_logits.softmax(dim=1).max(dim=1).values.view(copies, batch).t()
    relevance = mixed_targets.max(dim=1).values.view(copies, batch).t()
    order = torch.argsort(relevance, dim=1, descending=True, stable=True)
    discount = 1.0 / torch.log2(torch.arange(copies, device=logits.device, dtype=logits.dtype) + 3.0)
    dcg = raw_conf + (mixed_conf.gather(1, order) * discount).sum(dim=1)
    idcg = 1.0 + (relevance.gather(1, order) * discount).sum(dim=1)
    return torch.where(idcg > dcg, dcg / idcg, idcg / dcg)


class MRLLoss(nn.Module):
    """L = CE(z, y) + alpha * MRL (RankMixup eq. MRL + total-loss eq.); official defaults: CIFAR margin 2, Tiny margin 1."""

    def __init__(
        self,
        num_classes: int,
        margin: float = 2.0,
        alpha: float = 0.1,
        reduction: Literal["per_sample", "official"] = "per_sample",
    ) -> None:
        """Args:
        num_classes: number of classes K (checked against the logits).
        margin: confidence margin between a raw sample's max logit and its mixes'.
        alpha: weight of the ranking term (w in the paper).
        reduction: ``per_sample`` (paper, any number of copies) or ``official`` (B x B broadcast, one copy).
        """
        super().__init__()
        if reduction not in ("per_sample", "official"):
            raise ValueError(f"reduction must be 'per_sample' or 'official', got {reduction!r}")
        self.num_classes, self.margin, self.alpha, self.reduction = num_classes, margin, alpha, reduction

    def forward(self, logits: Tensor, mixed_logits: Tensor, targets: Tensor, mixed_targets: Tensor) -> LossOutput:
        check_classes(logits, self.num_classes)
        loss_ce = F.cross_entropy(logits, targets)
        loss_mixup = mrl_term(logits, mixed_logits, mixed_targets, self.margin, self.reduction)
        return LossOutput(loss_ce + self.alpha * loss_mixup, loss_ce, loss_mixup)


class MNDCGLoss(nn.Module):
    """L = CE(z, y) + alpha * mean_i (1 - NDCG_i) over [raw, M mixes] lists (RankMixup eq. M-NDCG); official M = 3."""

    def __init__(self, num_classes: int, alpha: float = 0.1) -> None:
        """Args:
        num_classes: number of classes K (checked against the logits).
        alpha: weight of the ranking term (w in the paper).
        """
        super().__init__()
        self.num_classes, self.alpha = num_classes, alpha

    def forward(self, logits: Tensor, mixed_logits: Tensor, targets: Tensor, mixed_targets: Tensor) -> LossOutput:
        check_classes(logits, self.num_classes)
        loss_ce = F.cross_entropy(logits, targets)
        loss_mixup = (1.0 - ndcg_per_sample(logits, mixed_logits, mixed_targets)).mean()
        return LossOutput(loss_ce + self.alpha * loss_mixup, loss_ce, loss_mixup)


class MixupLoss(nn.Module):
    """Baseline: soft-label CE on the mixed samples (mixup, Zhang et al. ICLR 2018, eq. 1).

    ``raw_weight > 0`` adds CE on the raw samples (RegMixup, Pinto et al. NeurIPS 2022: CE + eta * mixup CE).
    With ``raw_weight = 0`` no gradient flows through the raw logits (``loss_ce`` is reported detached).
    """

    def __init__(self, num_classes: int, raw_weight: float = 0.0, mix_weight: float = 1.0) -> None:
        """Args:
        num_classes: number of classes K (checked against the logits).
        raw_weight: weight of CE on the raw samples (0 = plain mixup).
        mix_weight: weight of the soft-label CE on the mixed samples.
        """
        super().__init__()
        self.num_classes, self.raw_weight, self.mix_weight = num_classes, raw_weight, mix_weight

    def forward(self, logits: Tensor, mixed_logits: Tensor, targets: Tensor, mixed_targets: Tensor) -> LossOutput:
        check_classes(logits, self.num_classes)
        num_copies(logits, mixed_logits, mixed_targets)
        loss_ce = F.cross_entropy(logits, targets)
        loss_mixup = -(mixed_targets * mixed_logits.log_softmax(dim=1)).sum(dim=1).mean()
        if self.raw_weight == 0:
            return LossOutput(self.mix_weight * loss_mixup, loss_ce.detach(), loss_mixup)
        return LossOutput(self.raw_weight * loss_ce + self.mix_weight * loss_mixup, loss_ce, loss_mixup)


def check_classes(logits: Tensor, num_classes: int) -> None:
    """Raise when the logits do not have `num_classes` columns."""
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"expected (B, {num_classes}) logits, got {tuple(logits.shape)}")

