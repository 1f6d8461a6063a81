"""Prototypes kept across iterations, their class-wise calibration, and dynamic pseudo labels by label transfer.

The paper (abstract, project page; research segmentation.md section 2.3) keeps source prototypes (from ground truth)
and target prototypes (from pseudo labels) across iterations, calibrates the prototypes class-wise to compensate the
domain bias gradually, and labels target pixels by their nearest (calibrated) source prototype ("dynamic pseudo
labels"), combined with the classifier's ("static") labels into hybrid pseudo labels. The release has none of this
(no momentum, no calibration, dynamic labels unused). Our reading, stated in the README's departures table:

* momentum update per class present in the batch: c_k <- m c_k + (1 - m) mean_batch_k, first sighting copies;
* calibration: a bias b_k <- m b_k + (1 - m) (c^t_k - c^s_k) for classes seen on both sides; label transfer uses
  the calibrated source prototypes c^s_k + beta b_k, beta ramping from 0 to 1 over training ("gradually");
* transfer: argmax_k cos(c_k, f_t(x)) where softmax(cos / tau) exceeds a confidence threshold, else ignore;
* hybrid: static and dynamic labels kept where they agree or where the other is ignore; disagreement -> ignore.

Under DDP the batch sums and counts are gathered from every process before the update, so the memory is the same on
every rank (and equal to a single process seeing the union of the batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bpcl_uda.losses import IGNORE_INDEX, MASKED_LOGIT, cosine_logits, downsample_labels, prototype_sums
from cvlab_shared.distributed import all_gather_rows

DOMAINS = ("source", "target")


def gathered_sums(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums [K, C] and counts [K] added over every DDP process (identity on one process)."""
    row = torch.cat([sums, counts[:, None]], dim=1).reshape(1, -1)
    total = all_gather_rows(row).sum(0).view(sums.shape[0], -1)
    return total[:, :-1], total[:, -1]


class PrototypeMemory(nn.Module):
    """Source and target class prototypes [K, C] updated with momentum, and the class-wise calibration bias.

    Buffers (saved in checkpoints): `source`, `target`, `bias` [K, C]; `seen_source`, `seen_target`, `seen_bias` [K].
    """

    def __init__(
        self, num_classes: int, channels: int, momentum: float = 0.99, calibration_momentum: float = 0.99
    ) -> None:
        super().__init__()
        self.num_classes, self.momentum, self.calibration_momentum = num_classes, momentum, calibration_momentum
        for name in ("source", "target", "bias"):
            self.register_buffer(name, torch.zeros(num_classes, channels))
            self.register_buffer(f"seen_{name}", torch.zeros(num_classes, dtype=torch.bool))

    @staticmethod
    def _blend(
        old: torch.Tensor, seen: torch.Tensor, new: torch.Tensor, present: torch.Tensor, m: float
    ) -> torch.Tensor:
        blended = torch.where(seen[:, None], m * old + (1 - m) * new, new)
        return torch.where(present[:, None], blended, old)

    @torch.no_grad()
    def update(self, domain: str, feature: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Momentum update of `domain`'s prototypes from a batch (labels nearest-downsampled to the feature grid);
        returns the classes present in the batch (over all processes)."""
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        small = downsample_labels(label, feature.shape[-2:])
        sums, counts = gathered_sums(*prototype_sums(feature.detach().float(), small, self.num_classes))
        present = counts > 0
        mean = sums / counts.clamp_min(1)[:, None]
        seen = getattr(self, f"seen_{domain}")
        getattr(self, domain).copy_(self._blend(getattr(self, domain), seen, mean, present, self.momentum))
        seen |= present
        return present

    @torch.no_grad()
    def update_calibration(self) -> None:
        """b_k <- m b_k + (1 - m) (c^t_k - c^s_k) for classes seen in both domains (first time: copy)."""
        both = self.seen_source & self.seen_target
        gap = self.target - self.source
        self.bias.copy_(self._blend(self.bias, self.seen_bias, gap, both, self.calibration_momentum))
        self.seen_bias |= both

    def calibrated_source(self, strength: float = 1.0) -> torch.Tensor:
        """Source prototypes shifted towards the target domain: c^s_k + strength * b_k (classes without a bias: c^s_k)."""
        return self.source + strength * self.bias * self.seen_bias[:, None]


def transfer_labels(
    feature: torch.Tensor,
    prototypes: torch.Tensor,
    available: torch.Tensor,
    size: tuple[int, int] | None = None,
    temperature: float = 0.1,
    threshold: float = 0.8,
) -> torch.Tensor:
    """Dynamic pseudo labels [N, h, w]: the class of the nearest available prototype, cos / tau softmax-confidence
    above `threshold`, else 255 (non-parametric label transfer). With `size`, nearest-upsampled to it."""
    logits = cosine_logits(feature.detach(), prototypes, temperature)
    logits = logits.masked_fill(~available[None, :, None, None], MASKED_LOGIT)
    confidence, label = F.softmax(logits, dim=1).max(dim=1)
    label = torch.where((confidence >= threshold) & available.any(), label, IGNORE_INDEX)
    if size is not None and tuple(size) != tuple(label.shape[-2:]):
        label = F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return label


def hybrid_pseudo_labels(static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
    """Combine classifier (static) and label-transfer (dynamic) pseudo labels of the same shape: agreement or a
    single opinion is kept, disagreement becomes 255."""
    if static.shape != dynamic.shape:
        raise ValueError(f"static {tuple(static.shape)} and dynamic {tuple(dynamic.shape)} labels differ in shape")
    out = torch.where(static == IGNORE_INDEX, dynamic, static)
    conflict = (static != IGNORE_INDEX) & (dynamic != IGNORE_INDEX) & (static != dynamic)
    return torch.where(conflict, IGNORE_INDEX, out)
