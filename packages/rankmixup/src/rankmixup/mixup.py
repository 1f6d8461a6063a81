"""Multi-mixup as RankMixup trains with it: M mixed copies of a batch, one lam ~ Beta(a, a) and one permutation each.

Copy m mixes every sample i with sample perm[m, i]: x~ = lam_m x_i + (1 - lam_m) x_perm (Zhang et al. 2018, eq. 1;
RankMixup sec. 3.1). The copies are stacked mixup-major, rows m*B .. m*B+B-1, as the official `forward_multimixup`
does. It works on any tensor whose first dimension is the batch: images, or layer-4 features (feature mixup).
Randomness comes only from the `torch.Generator` passed in, so a seeded run is reproducible and leaves the global
RNGs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class MixupBatch:
    """M mixed copies of a batch: inputs (M*B, ...), soft labels (M*B, K), lam (M,), permutations (M, B)."""

    inputs: Tensor
    soft_targets: Tensor
    lam: Tensor
    perm: Tensor


def sample_mixup(
    batch_size: int, num_mixup: int, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """lam (M,) float64 ~ Beta(alpha, alpha) (all 1 when alpha <= 0, as the official code) and M permutations (M, B).

    Both come from `generator` (a CPU torch.Generator); Beta draws go through a NumPy generator seeded from it.
    """
    if num_mixup < 1:
        raise ValueError(f"num_mixup must be >= 1, got {num_mixup}")
    perm = torch.stack([torch.randperm(batch_size, generator=generator) for _ in range(num_mixup)])
    if alpha <= 0:
        return torch.ones(num_mixup, dtype=torch.float64), perm
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=num_mixup)
    return torch.from_numpy(lam), perm


def mix(x: Tensor, targets: Tensor, num_classes: int, lam: Tensor, perm: Tensor) -> tuple[Tensor, Tensor]:
    """The mixed inputs (M*B, ...) and soft labels (M*B, K) for given lam (M,) and permutations (M, B)."""
    copies, batch = perm.shape
    if x.shape[0] != batch or targets.shape[0] != batch or lam.shape != (copies,):
        raise ValueError(f"batch {x.shape[0]} / targets {targets.shape[0]} / lam {tuple(lam.shape)} do not fit "
                         f"permutations {tuple(perm.shape)}")
    index = perm.to(x.device).reshape(-1)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    lam64 = lam.to(torch.float64)
    # lam and 1 - lam are formed in float64, then rounded once, as the official float scalars are.
    keep = lam64.to(device=x.device, dtype=dtype).repeat_interleave(batch).view(-1, 1)
    take = (1 - lam64).to(device=x.device, dtype=dtype).repeat_interleave(batch).view(-1, 1)
    shape = (-1, *([1] * (x.dim() - 1)))
    mixed = keep.view(shape) * x.repeat(copies, *([1] * (x.dim() - 1))) + take.view(shape) * x[index]
    onehot = F.one_hot(targets, num_classes).to(dtype)
    soft = keep * onehot.repeat(copies, 1) + take * onehot[index]
    return mixed, soft


def multi_mixup(
    x: Tensor,
    targets: Tensor,
    num_classes: int,
    num_mixup: int = 1,
    alpha: float = 2.0,
    generator: torch.Generator | None = None,
) -> MixupBatch:
    """`num_mixup` mixed copies of (x, targets) with lam ~ Beta(alpha, alpha) per copy (official: a = 2 CIFAR, 1 Tiny)."""
    lam, perm = sample_mixup(x.shape[0], num_mixup, alpha, generator)
    inputs, soft = mix(x, targets, num_classes, lam, perm)
    return MixupBatch(inputs, soft, lam, perm)
