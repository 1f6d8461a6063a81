"""DKD losses (Baek et al., NeurIPS 2022, Sec. 3): mBCE, KD, decomposed KD (positive / negative reasoning), AC.

Every term is a per-class mean over (batch, height, width) and the class terms are **summed** (as the official
trainer does), so the loss grows with the number of classes. Channel layout of the logits: channel 0 is the
auxiliary classifier (no background channel), channel c is class c.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _per_class_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy with logits averaged over all dims but the channel one: (N, C, *) -> (C,)."""
    weight = torch.full((logits.shape[1],) + (1,) * (logits.dim() - 2), pos_weight, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    return loss.transpose(0, 1).flatten(1).mean(1)


def positive_negative_logits(feature: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decomposed class scores (DKD Eq. 3): z+_c = sum_i max(w_ci, 0) f_i and z-_c = sum_i min(w_ci, 0) f_i.

    `feature` (N, D, h, w) is the penultimate feature, `weight` (C, D) the classifier rows; no bias, so that
    z_c = z+_c + z-_c + b_c. Returns two (N, C, h, w) tensors.
    """
    pos = torch.einsum("ndhw,cd->nchw", feature, weight.clamp(min=0))
    neg = torch.einsum("ndhw,cd->nchw", feature, weight.clamp(max=0))
    return pos, neg


def mbce_loss(logits: torch.Tensor, label: torch.Tensor, classes: Sequence[int], pos_weight: float = 1.0) -> torch.Tensor:
    """Multi-label BCE on current classes (DKD Eq. 1): one-vs-all targets 1[y = c] for each c in `classes`.

    `logits` (N, len(classes), H, W) are the channels of `classes`; background and ignore (255) pixels are negatives
    for every class, as in the official code. `pos_weight` scales the positive term. Returns (len(classes),).
    """
    ids = torch.as_tensor(list(classes), device=label.device).view(1, -1, 1, 1)
    target = (label.unsqueeze(1) == ids).to(logits.dtype)
    return _per_class_bce(logits, target, pos_weight)


def kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid knowledge distillation (DKD Eq. 2): BCE(z_c, sigmoid(z_c^old)) per old class, (C_old,)."""
    return _per_class_bce(logits, torch.sigmoid(teacher_logits))


def ac_loss(aux_logits: torch.Tensor) -> torch.Tensor:
    """Auxiliary-classifier loss (DKD Sec. 3.3): BCE(z_aux, 0) on every pixel, (1,)."""
    return _per_class_bce(aux_logits, torch.zeros_like(aux_logits))


@dataclass
class TeacherOutputs:
    """What the old model (step t-1) gives the loss: full-resolution logits (aux + old classes) and the feature."""

    logits: torch.Tensor
    feature: torch.Tensor
    weight: torch.Tensor


class DKDLoss(nn.Module):
    """L = mbce * sum mBCE + kd * sum KD + dkd_pos * sum KD(z+) + dkd_neg * sum KD(z-) + ac * AC (DKD Eq. 6).

    Defaults are the official VOC weights (1 / 5 / 5 / 5 / 1) with `pos_weight` 1 for incremental steps (the
    official VOC base step uses 2, ADE 35). At step 0 (no teacher) only mBCE and AC apply.
    """

    def __init__(
        self,
        mbce: float = 1.0,
        kd: float = 5.0,
        dkd_pos: float = 5.0,
        dkd_neg: float = 5.0,
        ac: float = 1.0,
        pos_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.weights = {"mbce": mbce, "kd": kd, "dkd_pos": dkd_pos, "dkd_neg": dkd_neg, "ac": ac}
        self.pos_weight = pos_weight

    def parts(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        num_old: int,
        feature: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        teacher: TeacherOutputs | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-class loss vectors by name (unweighted).

        Args:
            logits: (N, 1 + C, H, W), channel 0 = auxiliary classifier, channels 1..num_old old classes, the rest new.
            label: (N, H, W) with current-step classes, 0 elsewhere, 255 ignored (ignore pixels are negatives).
            num_old: number of old classes (0 at step 0).
            feature: current penultimate feature (N, D, h, w); needed with a teacher.
            weight: current classifier rows of the old classes or more, (>= num_old, D), aux row excluded.
            teacher: the old model's outputs; None at step 0 or for fine-tuning without distillation.
        """
        new_classes = range(num_old + 1, logits.shape[1])
        out = {
            "mbce": mbce_loss(logits[:, num_old + 1 :], label, new_classes, self.pos_weight),
            "ac": ac_loss(logits[:, :1]),
        }
        if teacher is None or num_old == 0:
            return out
        if feature is None or weight is None:
            raise ValueError("distillation needs the current feature and classifier rows")
        out["kd"] = kd_loss(logits[:, 1 : num_old + 1], teacher.logits[:, 1 : num_old + 1])
        pos, neg = positive_negative_logits(feature, weight[:num_old])
        pos_old, neg_old = positive_negative_logits(teacher.feature, teacher.weight[:num_old])
        out["dkd_pos"] = kd_loss(pos, pos_old)
        out["dkd_neg"] = kd_loss(neg, neg_old)
        return out

    def forward(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        num_old: int,
        feature: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        teacher: TeacherOutputs | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and the summed (unweighted) value of each term, for logging."""
        parts = self.parts(logits, label, num_old, feature, weight, teacher)
        sums = {name: vec.sum() for name, vec in parts.items()}
        total = sum(self.weights[name] * value for name, value in sums.items())
        return total, sums
