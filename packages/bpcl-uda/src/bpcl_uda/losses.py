"""BPCL losses: bi-directional pixel-prototype contrast and the entropy term (Lee et al., ECCV 2022).

Directions (paper section 3; the official release names them metric_loss1/2):
* t2s: every target pixel against the *source* prototypes, its target label as the positive;
* s2t: every source pixel against the *target* prototypes, its source label as the positive.
A direction is a cross-entropy over classes of the logits s_k(x) = cos(c_k, f(x)) / tau (tau = 0.1), with class
weights 1 for classes present on both sides and 0 otherwise (the release's `class_weight`).

Two conventions are offered, because the release departs from the paper (research segmentation.md section 2.3):
* the paper's (`release=False`, default): prototypes come from the momentum `PrototypeMemory`, absent prototypes
  are masked out of the softmax, the loss is taken at feature resolution with labels nearest-downsampled;
* the release's (`release=True`): prototypes are the masked means of the current image pair, absent prototypes
  are zero vectors whose cosine 0 is replaced by -1 before scaling, logits are nearest-upsampled to the label size,
  and one class-weighted criterion serves both directions (reproduces golden `bpcl.metric_loss_bidirectional`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255
MASKED_LOGIT = -1.0e4  # logit of an absent prototype in the paper convention (exp underflows to 0)


def downsample_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a label map [N, H, W] to `size` (as `F.interpolate(mode="nearest")`)."""
    return F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0].long()


def prototype_sums(feature: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class feature sums [K, C] and pixel counts [K] over pixels with label in [0, K) (label at feature size)."""
    valid = (label >= 0) & (label < num_classes)
    onehot = F.one_hot(torch.where(valid, label, 0), num_classes).to(feature.dtype) * valid[..., None]
    sums = torch.einsum("nchw,nhwk->kc", feature, onehot)
    return sums, onehot.sum(dim=(0, 1, 2))


def class_prototypes(feature: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes c_k = mean of f(x) over pixels labelled k (paper eq. 1) [K, C], zero for absent classes; and the
    presence mask [K]. `label` is at feature resolution."""
    sums, counts = prototype_sums(feature, label, num_classes)
    return sums / counts.clamp_min(1)[:, None], counts > 0


def cosine_logits(feature: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """s_k(x) = cos(c_k, f(x)) / tau [N, K, h, w] (paper eq. 2); a zero prototype gives cosine exactly 0."""
    return torch.einsum("nchw,kc->nkhw", F.normalize(feature, dim=1), F.normalize(prototypes, dim=1)) / temperature


def weighted_cross_entropy(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`F.cross_entropy(weight=, ignore_index=255)`, but 0 (with a graph) when no pixel has a positive weight."""
    valid = (label != IGNORE_INDEX) & (label < logits.shape[1])
    target = torch.where(valid, label, IGNORE_INDEX)
    if not bool((weight[target[valid]] > 0).any()):
        return logits.sum() * 0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)


def direction_loss(
    feature: torch.Tensor,
    label: torch.Tensor,
    prototypes: torch.Tensor,
    class_weight: torch.Tensor,
    temperature: float = 0.1,
    available: torch.Tensor | None = None,
) -> torch.Tensor:
    """One contrast direction, paper convention: pixels of `feature` against `prototypes` of the other domain,
    CE at feature resolution against `label` (nearest-downsampled), absent prototypes (`available` False) masked."""
    label = downsample_labels(label, feature.shape[-2:]) if label.shape[-2:] != feature.shape[-2:] else label
    logits = cosine_logits(feature, prototypes, temperature)
    if available is not None:
        logits = logits.masked_fill(~available[None, :, None, None], MASKED_LOGIT)
    return weighted_cross_entropy(logits, label, class_weight.to(logits.dtype))


def release_direction_logits(
    feature: torch.Tensor, prototypes: torch.Tensor, size: tuple[int, int], temperature: float
) -> torch.Tensor:
    """The release's logits: cosine with exact zeros set to -1, divided by tau, nearest-upsampled to `size`."""
    cosine = cosine_logits(feature, prototypes, 1.0)
    cosine = torch.where(cosine == 0, torch.full_like(cosine, -1.0), cosine)
    return F.interpolate(cosine / temperature, size=size, mode="nearest")


def release_metric_loss(
    feature_s: torch.Tensor,
    label_s: torch.Tensor,
    feature_t: torch.Tensor,
    label_t: torch.Tensor,
    num_classes: int = 19,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_t2s, L_s2t) of the release's `metric_loss`, averaged over the (source_i, target_i) pairs of the batch.

    Prototypes from the pair itself (zero when absent), class weight 1 for classes present in both downsampled label
    maps, logits nearest-upsampled to the label size, CE against the full-resolution labels.
    """
    t2s, s2t = [], []
    size = feature_s.shape[-2:]
    for i in range(feature_s.shape[0]):
        fs, ft = feature_s[i : i + 1], feature_t[i : i + 1]
        small_s, small_t = downsample_labels(label_s[i : i + 1], size), downsample_labels(label_t[i : i + 1], size)
        proto_s, present_s = class_prototypes(fs, small_s, num_classes)
        proto_t, present_t = class_prototypes(ft, small_t, num_classes)
        weight = (present_s & present_t).to(fs.dtype)
        logits_t = release_direction_logits(ft, proto_s, label_t.shape[-2:], temperature)
        logits_s = release_direction_logits(fs, proto_t, label_s.shape[-2:], temperature)
        t2s.append(weighted_cross_entropy(logits_t, label_t[i : i + 1], weight))
        s2t.append(weighted_cross_entropy(logits_s, label_s[i : i + 1], weight))
    return torch.stack(t2s).mean(), torch.stack(s2t).mean()


def entropy_map(logits: torch.Tensor, release: bool = False) -> torch.Tensor:
    """Per-pixel prediction entropy H = -sum_k p_k log p_k [N, h, w] with p = softmax(logits).

    `release=True` computes -sum_k p_k log_softmax(p)_k (the log-softmax of the probabilities, as released;
    golden `bpcl.entropy_loss`), which is nearly constant (about log K) and gives a much weaker gradient.
    """
    prob = F.softmax(logits, dim=1)
    log_prob = F.log_softmax(prob if release else logits, dim=1)
    return -(prob * log_prob).sum(dim=1)


class PixelPrototypeContrast(nn.Module):
    """Bi-directional pixel-prototype contrast: `weight_t2s * L_t2s + weight_s2t * L_s2t` (paper eq. 3-5).

    Paper convention: call with the memory's prototypes (`proto_s`, `proto_t` and their availability masks);
    class weights are 1 for classes available on both sides and present in the labels of both batches.
    Release convention (`release=True`): prototypes are computed from the batch itself (pass none).
    Returns (total, {"t2s": ..., "s2t": ...}).
    """

    def __init__(
        self,
        num_classes: int = 19,
        temperature: float = 0.1,
        weight_t2s: float = 0.2,
        weight_s2t: float = 0.2,
        release: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes, self.temperature, self.release = num_classes, temperature, release
        self.weight_t2s, self.weight_s2t = weight_t2s, weight_s2t

    def forward(
        self,
        feature_s: torch.Tensor,
        label_s: torch.Tensor,
        feature_t: torch.Tensor,
        label_t: torch.Tensor,
        proto_s: torch.Tensor | None = None,
        proto_t: torch.Tensor | None = None,
        available_s: torch.Tensor | None = None,
        available_t: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.release:
            t2s, s2t = release_metric_loss(feature_s, label_s, feature_t, label_t, self.num_classes, self.temperature)
        else:
            if proto_s is None or proto_t is None:
                raise ValueError("the paper convention needs the memory's source and target prototypes")
            k = self.num_classes
            available_s = proto_s.new_ones(k, dtype=torch.bool) if available_s is None else available_s
            available_t = proto_t.new_ones(k, dtype=torch.bool) if available_t is None else available_t
            small_s = downsample_labels(label_s, feature_s.shape[-2:])
            small_t = downsample_labels(label_t, feature_t.shape[-2:])
            present = torch.zeros(k, dtype=torch.bool, device=feature_s.device)
            for small in (small_s, small_t):
                ids = small[(small >= 0) & (small < k)].unique()
                mask = torch.zeros_like(present)
                mask[ids] = True
                present = mask if small is small_s else present & mask
            weight = (present & available_s & available_t).to(feature_s.dtype)
            t2s = direction_loss(feature_t, small_t, proto_s, weight, self.temperature, available_s)
            s2t = direction_loss(feature_s, small_s, proto_t, weight, self.temperature, available_t)
        total = self.weight_t2s * t2s + self.weight_s2t * s2t
        return total, {"t2s": t2s, "s2t": s2t}
