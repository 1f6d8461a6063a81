"""ACLS and the regularisation-based calibration losses it analyses, as pure functions plus small modules.

Notation (calibration.md section 2): logits z (N, K), labels y, z_max = max_k z_k, sg = stop-gradient,
[x]_+ = max(x, 0). Every module's forward returns the scalar loss and keeps its detached parts in
`self.components` for logging. Inputs with more than two dimensions (N, K, H, W) are read per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


LS_ALPHA = 0.05  # label-smoothing weight of the official ACLS and MbLS configs (calibration.md section 2.2)


def _as_rows(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(N, K, ...) logits and (N, ...) targets -> (N*..., K) and (N*...,)."""
    if logits.ndim > 2:
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        targets = targets.reshape(-1)
    return logits, targets


def acls_regulariser(logits: Tensor, pos_lambda: float, neg_lambda: float, margin: float) -> Tensor:
    """ACLS regulariser R = pos_lambda R_pos + neg_lambda R_neg (ACLS, ICCV 2023, section 3.3).

    R_pos = mean_i [z_max,i - M]_+^2 (pushes the winning logit down once it exceeds M);
    R_neg = 1/(N(K-1)) sum_i sum_{k not max} [sg(z_max,i) - z_ik - M]_+^2 (pulls up logits trailing by more than M).
    Ties: every logit equal to the row maximum is left out of R_neg (the official mask), the normaliser staying
    N(K-1); R_pos counts the maximum once per row, and its gradient goes to one of the tied logits (the index
    `max` returns).
    """
    n, k = logits.shape
    z_max = logits.max(dim=1, keepdim=True).values
    winner = logits == z_max
    pos = F.relu(z_max - margin).square().sum() / n
    trailing = F.relu(z_max.detach() - logits - margin).square()
    neg = trailing.masked_fill(winner, 0.0).sum() / (n * (k - 1))
    return pos_lambda * pos + neg_lambda * neg


def acls_loss(
    logits: Tensor,
    targets: Tensor,
    pos_lambda: float = 1.0,
    neg_lambda: float = 0.1,
    alpha: float = 0.1,
    margin: float = 10.0,
) -> dict[str, Tensor]:
    """L_ACLS = CE(z, y) + alpha R (ACLS eq. for the total loss); returns {"loss", "ce", "reg"}."""
    logits, targets = _as_rows(logits, targets)
    ce = F.cross_entropy(logits, targets)
    reg = acls_regulariser(logits, pos_lambda, neg_lambda, margin)
    return {"loss": ce + alpha * reg, "ce": ce, "reg": reg}


def label_smoothing_loss(logits: Tensor, targets: Tensor, alpha: float = LS_ALPHA) -> dict[str, Tensor]:
    """LS (Szegedy et al. 2016): mean of (1 - alpha) NLL + alpha mean_k(-log p_k); returns {"loss", "ce"}."""
    logits, targets = _as_rows(logits, targets)
    log_probs = F.log_softmax(logits, dim=1)
    ce = F.nll_loss(log_probs, targets)
    return {"loss": (1 - alpha) * ce - alpha * log_probs.mean(dim=1).mean(), "ce": ce}


def focal_loss(logits: Tensor, targets: Tensor, gamma: float | Tensor = 3.0) -> dict[str, Tensor]:
    """Focal loss (Lin et al. 2017): mean of -(1 - p_y)^gamma log p_y; `gamma` may be per sample."""
    logits, targets = _as_rows(logits, targets)
    log_pt = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    weight = (1 - log_pt.exp()).clamp(min=0) ** gamma
    return {"loss": -(weight * log_pt).mean(), "ce": -log_pt.mean()}


def adaptive_gamma(pt: Tensor, gamma: float = 3.0) -> Tensor:
    """FLSD-53 schedule (Mukhoti et al. 2020): gamma 5 where p_y < 0.2, 3 where p_y < 0.5, else `gamma`."""
    return torch.where(pt < 0.2, 5.0, torch.where(pt < 0.5, 3.0, gamma)).to(pt.dtype)


def margin_loss(logits: Tensor, targets: Tensor, margin: float = 10.0, alpha: float = 0.1) -> dict[str, Tensor]:
    """MbLS (Liu et al. CVPR 2022): CE + alpha mean over N x K of [z_max - z_k - m]_+.

    Returns {"loss", "ce", "margin"}.
    """
    logits, targets = _as_rows(logits, targets)
    ce = F.cross_entropy(logits, targets)
    gap = F.relu(logits.max(dim=1, keepdim=True).values - logits - margin).mean()
    return {"loss": ce + alpha * gap, "ce": ce, "margin": gap}


class CalibrationLoss(nn.Module):
    """Base of the package's losses (the choices of `--model.loss`): returns the scalar loss; the detached parts of
    the last call are in `components`."""

    components: dict[str, Tensor]

    def _finish(self, parts: dict[str, Tensor]) -> Tensor:
        self.components = {k: v.detach() for k, v in parts.items() if k != "loss"}
        return parts["loss"]


class ACLSLoss(CalibrationLoss):
    def __init__(
        self,
        num_classes: int,
        pos_lambda: float = 1.0,
        neg_lambda: float = 0.1,
        alpha: float = 0.1,
        margin: float = 10.0,
    ) -> None:
        """Adaptive and conditional label smoothing (official argument names and Tiny-ImageNet defaults).

        Args:
            num_classes: number of classes (checked against the logits).
            pos_lambda: weight of the term on the winning logit.
            neg_lambda: weight of the term on the other logits.
            alpha: weight of the regulariser against cross-entropy.
            margin: the logit margin M.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ACLS needs at least 2 classes, got num_classes={num_classes}")
        self.num_classes, self.pos_lambda, self.neg_lambda = num_classes, pos_lambda, neg_lambda
        self.alpha, self.margin = alpha, margin

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"ACLSLoss(num_classes={self.num_classes}) got logits with {logits.shape[1]} classes")
        return self._finish(acls_loss(logits, targets, self.pos_lambda, self.neg_lambda, self.alpha, self.margin))


class CrossEntropyLoss(CalibrationLoss):
    """Plain cross-entropy, in the same style (the reference every table compares against)."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits, targets = _as_rows(logits, targets)
        ce = F.cross_entropy(logits, targets)
        return self._finish({"loss": ce, "ce": ce})


class LabelSmoothingLoss(CalibrationLoss):
    def __init__(self, alpha: float = LS_ALPHA) -> None:
        """Label smoothing with weight `alpha` (0.05 in the official ACLS/MbLS configs)."""
        super().__init__()
        self.alpha = alpha

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self._finish(label_smoothing_loss(logits, targets, self.alpha))


class FocalLoss(CalibrationLoss):
    def __init__(self, gamma: float = 3.0) -> None:
        """Focal loss with a fixed `gamma` (3 in the official configs)."""
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self._finish(focal_loss(logits, targets, self.gamma))


class AdaptiveFocalLoss(CalibrationLoss):
    def __init__(self, gamma: float = 3.0) -> None:
        """FLSD-53: focal loss whose gamma is chosen per sample from p_y (see `adaptive_gamma`)."""
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        rows, labels = _as_rows(logits, targets)
        with torch.no_grad():
            pt = F.softmax(rows, dim=1).gather(1, labels[:, None]).squeeze(1)
        return self._finish(focal_loss(rows, labels, adaptive_gamma(pt, self.gamma)))


class MbLSLoss(CalibrationLoss):
    def __init__(self, margin: float = 10.0, alpha: float = 0.1) -> None:
        """Margin-based label smoothing (MbLS, official `LogitMarginL1` without its alpha schedule)."""
        super().__init__()
        self.margin, self.alpha = margin, alpha

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self._finish(margin_loss(logits, targets, self.margin, self.alpha))


LOSSES = {
    "ce": CrossEntropyLoss,
    "ls": LabelSmoothingLoss,
    "focal": FocalLoss,
    "flsd": AdaptiveFocalLoss,
    "mbls": MbLSLoss,
    "acls": ACLSLoss,
}


def build_loss(name: str, num_classes: int, **kwargs: float) -> CalibrationLoss:
    """A loss by short name (ce | ls | focal | flsd | mbls | acls) with its keyword arguments."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    if name == "acls":
        return ACLSLoss(num_classes, **kwargs)
    return LOSSES[name](**kwargs)
