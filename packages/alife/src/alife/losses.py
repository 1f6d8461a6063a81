"""ALIFE's objectives (Oh, Baek, Ham, NeurIPS 2022) and MiB's losses it builds on, as pure functions.

Logits are (N, C, H, W) with background at channel 0 and classes of C_{0:t} after it; `logits_old` are the
previous model's (N, C_old, H, W) logits. Training labels follow the official masking: background and the
current classes, 255 = ignore; every other class is 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `mask`; 0 (with a gradient path) when the mask is empty."""
    count = mask.sum()
    return (values * mask).sum() / count.clamp_min(1)


def ali_map(logits: torch.Tensor, logits_old: torch.Tensor) -> torch.Tensor:
    """Adaptive logit regulariser per pixel (ALIFE Eq. 4): logsumexp_c z_c - sum_{c old} p^o_c z_c, i.e. the
    cross-entropy from the old model's softmax to the new full softmax. (N, C, H, W), (N, C_old, H, W) -> (N, H, W)."""
    num_old = logits_old.shape[1]
    p_old = logits_old.softmax(dim=1)
    return torch.logsumexp(logits, dim=1) - (p_old * logits[:, :num_old]).sum(dim=1)


def ali_loss(logits: torch.Tensor, logits_old: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """ALI averaged over background pixels (label 0) only, as in the official run_step1.py."""
    return _masked_mean(ali_map(logits, logits_old), label == 0)


def kd_map(logits: torch.Tensor, logits_old: torch.Tensor) -> torch.Tensor:
    """MiB's plain KD per pixel: -(1/|C_old|) sum_{c old} p^o_c log softmax(z_{old channels})_c (softmax
    renormalised over the old channels). -> (N, H, W)."""
    num_old = logits_old.shape[1]
    log_p = logits[:, :num_old].log_softmax(dim=1)
    return -(log_p * logits_old.softmax(dim=1)).mean(dim=1)


def kd_loss(logits: torch.Tensor, logits_old: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """KD averaged over pixels with label != 0 (new-class and ignored pixels), as in the official run_step1.py."""
    return _masked_mean(kd_map(logits, logits_old), label != 0)


def ce_background_ignored(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Step-1 CE: background pixels set to 255, per-pixel CE (ignore 255) averaged over *all* pixels (ignored ones
    count as 0 in the mean), as the official `.mean()` of `reduction='none'`."""
    target = torch.where(label == 0, torch.full_like(label, IGNORE), label)
    return F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").mean()


def focal_loss(logits: torch.Tensor, label: torch.Tensor, alpha: float = 1.0, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss alpha (1 - p_y)^gamma CE (Lin et al. 2017) per pixel, ignore 255, mean over all pixels."""
    ce = F.cross_entropy(logits, label, ignore_index=IGNORE, reduction="none")
    return (alpha * (1 - torch.exp(-ce)) ** gamma * ce).mean()


def combined_labels(label: torch.Tensor, logits_old: torch.Tensor) -> torch.Tensor:
    """Step-3 pseudo labels: background pixels take the old model's arg-max (ALIFE-M Sec. 3.3)."""
    return torch.where(label == 0, logits_old.argmax(dim=1), label)


def memory_ce(memory: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """CE of the classifier on the (rotated) feature memory (K, M, D): row k is class k's features."""
    num_classes, per_class, _ = memory.shape
    logits = memory.reshape(num_classes * per_class, -1) @ weight.t() + bias
    target = torch.arange(num_classes, device=memory.device).repeat_interleave(per_class)
    return F.cross_entropy(logits, target)


def unbiased_ce(logits: torch.Tensor, label: torch.Tensor, num_old: int) -> torch.Tensor:
    """MiB unbiased CE (Cermelli et al. 2020, Eq. 4): background probability = sum over background and old classes."""
    den = torch.logsumexp(logits, dim=1, keepdim=True)
    background = torch.logsumexp(logits[:, :num_old], dim=1, keepdim=True) - den
    log_p = torch.cat([background, logits[:, num_old:] - den], dim=1)
    target = torch.where(label < num_old, torch.zeros_like(label), label - num_old + 1)
    target = torch.where(label == IGNORE, label, target)
    return F.nll_loss(log_p, target, ignore_index=IGNORE)


def unbiased_kd(logits: torch.Tensor, logits_old: torch.Tensor) -> torch.Tensor:
    """MiB unbiased KD (Eq. 5): the old background probability is matched to background + new classes."""
    num_old = logits_old.shape[1]
    den = torch.logsumexp(logits, dim=1)
    background_and_new = torch.cat([logits[:, :1], logits[:, num_old:]], dim=1)
    log_background = torch.logsumexp(background_and_new, dim=1) - den
    log_old = logits[:, 1:num_old] - den.unsqueeze(1)
    p_old = logits_old.softmax(dim=1)
    return -((p_old[:, 0] * log_background + (p_old[:, 1:] * log_old).sum(dim=1)) / num_old).mean()


class ALILoss(nn.Module):
    """ALIFE step-1 objective: CE (background ignored, mean over all pixels) + lambda_ALI ALI (background pixels)
    + lambda_KD KD (other pixels). Released (lambda_ALI, lambda_KD): VOC 19-1 (1, 1), 15-5 (2, 1), 15-1 per step
    (3, 1), (5, 10), (2, 1), (3, 10), (2, 1); ADE 100-x (1, 1), 50-50 (1, 20)."""

    def __init__(self, ali: float = 1.0, kd: float = 1.0) -> None:
        super().__init__()
        self.ali, self.kd = ali, kd

    def forward(
        self, logits: torch.Tensor, logits_old: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            "ce": ce_background_ignored(logits, label),
            "ali": ali_loss(logits, logits_old, label),
            "kd": kd_loss(logits, logits_old, label),
        }
        return parts["ce"] + self.ali * parts["ali"] + self.kd * parts["kd"], parts


class ReplayLoss(nn.Module):
    """ALIFE-M step-3 objective: focal loss on labels completed by the old model + lambda_ALI ALI + lambda_MEM CE on
    the whole rotated memory. Released (lambda_ALI, lambda_MEM): VOC 19-1 (1, 1), 15-5 (1, 10), 15-1 per step
    (3, 1), (5, 20), (2, 1), (3, 2), (1, 1); ADE 100-50 (0, 0.5), 100-10 (5, 2), (5, 1), (2, 1), (0, 0.1), (0, 0.5);
    50-50 (0, 0.1), (0, 0.5)."""

    def __init__(self, ali: float = 1.0, mem: float = 1.0) -> None:
        super().__init__()
        self.ali, self.mem = ali, mem

    def forward(
        self,
        logits: torch.Tensor,
        logits_old: torch.Tensor,
        label: torch.Tensor,
        memory: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {
            "focal": focal_loss(logits, combined_labels(label, logits_old)),
            "ali": ali_loss(logits, logits_old, label),
            "mem": memory_ce(memory, weight, bias),
        }
        return parts["focal"] + self.ali * parts["ali"] + self.mem * parts["mem"], parts


@torch.no_grad()
def init_like_mib(weight: torch.Tensor, bias: torch.Tensor, num_new: int) -> None:
    """MiB classifier init (Cermelli et al. 2020, Sec. 3.3) on full rows (C, D) and biases (C,) whose last
    `num_new` rows are new: new rows := background row, new biases and the background bias := b_bg - log(n + 1)."""
    start = weight.shape[0] - num_new
    weight[start:] = weight[0]
    shifted = bias[0] - math.log(num_new + 1)
    bias[start:] = shifted
    bias[0] = shifted
