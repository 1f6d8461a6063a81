"""CMAlign: parameter-free dense cross-modal alignment of LbA (Park et al., "Learning by Aligning", ICCV'21, Sec. 3).

For a batch `cat([visible (B), infrared (B)])` of feature maps f (C x H x W) arranged identity-major (B = ids x
num_pos), every image gets a positive partner (same identity, other modality) and a negative partner (other
identity, other modality) (`cmalign_pairs`). For an image and a partner t:

- matching probability (Eq. 1): P(p, q) = softmax_q(beta * cos(f(p), f_t(q))), beta = 50;
- soft warp (Eq. 2): f_w(p) = sum_q P(p, q) f_t(q);
- person mask (Eq. 3, detached): M(p) = min-max normalised ||f(p)||_2 over the positions of the image;
- reconstruction (Eq. 4): f_hat = M * f_w + (1 - M) * f;
- co-attention mask (Eq. 6, detached, positive partner): Mc(p) = M(p) sum_q P(p, q) M_t(q), min-max normalised;
- dense triplet loss (Eq. 7): L_DT = mean_{i,p} Mc_i(p) [||f_i(p) - f_hat_i^+(p)|| - ||f_i(p) - f_hat_i^-(p)|| + a]_+.

`semantics="legacy"` reproduces what the official line computed on PyTorch <= 1.7, where the [N,1,H,W] co-mask
times the [N,H,W] hinge broadcast to [N,N,H,W]: mean_p (batch-mean Mc)(p) * (batch-mean hinge)(p).
"""

from __future__ import annotations

import random
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SEMANTICS = ("paper", "legacy")


def _partners(num_ids: int, num_pos: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Positive and negative partner indices inside one modality block of num_ids x num_pos images."""
    pos = [b * num_pos + j for b in range(num_ids) for j in rng.sample(range(num_pos), num_pos)]
    neg = []
    for b in range(num_ids):
        others = [k for k in range(num_ids) if k != b]
        ids = rng.sample(others, num_pos) if num_pos <= len(others) else rng.choices(others, k=num_pos)
        neg += [i * num_pos + j for i, j in zip(ids, rng.sample(range(num_pos), num_pos))]
    return pos, neg


def cmalign_pairs(num_ids: int, num_pos: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Partner indices into `cat([visible, infrared])` (each num_ids x num_pos, identity-major): visible anchors
    point into the infrared half and vice versa. The draws follow the official order (visible block's positives
    then negatives, then the infrared block's), so `random.Random(0)` gives the official pairs of `random.seed(0)`."""
    if num_ids < 2:
        raise ValueError(f"CMAlign needs at least two identities per batch for negatives, got {num_ids}")
    n = num_ids * num_pos
    pos_v, neg_v = _partners(num_ids, num_pos, rng)
    pos_t, neg_t = _partners(num_ids, num_pos, rng)
    pos = torch.tensor([p + n for p in pos_v] + pos_t)
    neg = torch.tensor([p + n for p in neg_v] + neg_t)
    return pos, neg


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation over the positions of each image, (N, L) -> (N, L) in [0, 1]."""
    x = x - x.min(dim=1, keepdim=True).values
    return x / (x.max(dim=1, keepdim=True).values + 1e-12)


def person_mask(feat: torch.Tensor) -> torch.Tensor:
    """Eq. 3: (N, C, H, W) -> (N, H, W) min-max normalised channel L2 norm, detached."""
    n, _, h, w = feat.shape
    return _minmax(feat.detach().norm(dim=1).reshape(n, h * w)).reshape(n, h, w)


def matching_probability(feat: torch.Tensor, target: torch.Tensor, temperature: float = 50.0) -> torch.Tensor:
    """Eq. 1: (N, HW, HW) softmax over target positions q of temperature * cosine(f(p), f_t(q))."""
    q = F.normalize(feat.flatten(2), dim=1)
    k = F.normalize(target.flatten(2), dim=1)
    return torch.softmax(temperature * torch.bmm(q.transpose(1, 2), k), dim=-1)


def soft_warp(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: f_w(p) = sum_q P(p, q) f_t(q), (N, C, H, W)."""
    n, c, h, w = target.shape
    return torch.bmm(target.flatten(2), prob.transpose(1, 2)).reshape(n, c, h, w)


def reconstruct(mask: torch.Tensor, warped: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """Eq. 4: person regions replaced by the aligned other-modality features."""
    m = mask.unsqueeze(1)
    return m * warped + (1.0 - m) * feat


def co_attention_mask(prob: torch.Tensor, mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 6: M(p) * sum_q P(p, q) M_t(q), min-max normalised per image, detached; (N, H, W)."""
    n, h, w = mask.shape
    co = mask.reshape(n, -1) * torch.bmm(prob.detach(), target_mask.reshape(n, -1, 1)).squeeze(-1)
    return _minmax(co).reshape(n, h, w).detach()


def dense_triplet_loss(
    feat: torch.Tensor,
    recon_pos: torch.Tensor,
    recon_neg: torch.Tensor,
    comask: torch.Tensor,
    margin: float = 0.3,
    semantics: str = "paper",
) -> torch.Tensor:
    """Eq. 7, per-position triplet on channel L2 distances (+1e-6 inside the norm, as F.pairwise_distance)
    weighted by the co-attention mask; `semantics="legacy"`: the official PyTorch<=1.7 broadcast (module doc)."""
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    d_pos = (feat - recon_pos + 1e-6).norm(dim=1)
    d_neg = (feat - recon_neg + 1e-6).norm(dim=1)
    hinge = F.relu(d_pos - d_neg + margin)
    if semantics == "paper":
        return (comask * hinge).mean()
    return (comask.mean(0) * hinge.mean(0)).mean()


class DenseTripletLoss(nn.Module):
    """Module form of `dense_triplet_loss` (margin 0.3; `semantics` "paper" per-sample weighting or "legacy")."""

    def __init__(self, margin: float = 0.3, semantics: str = "paper") -> None:
        super().__init__()
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
        self.margin, self.semantics = margin, semantics

    def forward(self, feat, recon_pos, recon_neg, comask) -> torch.Tensor:
        return dense_triplet_loss(feat, recon_pos, recon_neg, comask, self.margin, self.semantics)


class CMAlignOutput(NamedTuple):
    """`recon_pos`: positive reconstructions (for the ID-consistency loss); `loss`: dense triplet; the rest for
    inspection and plots."""

    recon_pos: torch.Tensor
    recon_neg: torch.Tensor
    loss: torch.Tensor
    mask: torch.Tensor
    comask: torch.Tensor
    prob_pos: torch.Tensor


class CMAlign(nn.Module):
    """Cross-modal alignment (no parameters): called on visible and infrared maps of one training batch, draws
    the partners with its own seeded `random.Random` (or takes `pos_idx` / `neg_idx`), and returns the positive
    and negative reconstructions and the dense triplet loss. Used only in training: the test path never calls it.
    """

    def __init__(
        self,
        num_ids: int = 8,
        num_pos: int = 4,
        temperature: float = 50.0,
        margin: float = 0.3,
        semantics: str = "paper",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_ids, self.num_pos, self.temperature = num_ids, num_pos, temperature
        self.criterion = DenseTripletLoss(margin, semantics)
        self.rng = random.Random(seed)

    def forward(
        self,
        feat_v: torch.Tensor,
        feat_t: torch.Tensor,
        pos_idx: torch.Tensor | None = None,
        neg_idx: torch.Tensor | None = None,
    ) -> CMAlignOutput:
        feat = torch.cat([feat_v, feat_t])
        if pos_idx is None or neg_idx is None:
            if len(feat_v) != self.num_ids * self.num_pos:
                raise ValueError(
                    f"CMAlign expects {self.num_ids} ids x {self.num_pos} images per modality, got {len(feat_v)}"
                )
            pos_idx, neg_idx = cmalign_pairs(self.num_ids, self.num_pos, self.rng)
        pos_idx, neg_idx = pos_idx.to(feat.device), neg_idx.to(feat.device)
        mask = person_mask(feat)
        prob_pos = matching_probability(feat, feat[pos_idx], self.temperature)
        recon_pos = reconstruct(mask, soft_warp(prob_pos, feat[pos_idx]), feat)
        comask = co_attention_mask(prob_pos, mask, mask[pos_idx])
        prob_neg = matching_probability(feat, feat[neg_idx], self.temperature)
        recon_neg = reconstruct(mask, soft_warp(prob_neg, feat[neg_idx]), feat)
        loss = self.criterion(feat, recon_pos, recon_neg, comask)
        return CMAlignOutput(recon_pos, recon_neg, loss, mask, comask, prob_pos)
