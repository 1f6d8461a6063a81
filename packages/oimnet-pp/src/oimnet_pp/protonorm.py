"""ProtoNorm (OIMNet++, Lee et al., ECCV'22, Sec. 3.3): feature standardisation with a prototype-balanced mean.

In training, the mean is the mean of identity prototypes instead of RoIs: every RoI of a labelled identity (and
all background RoIs, target 0, together) is averaged into one prototype, and every unlabelled RoI (target 5555) is
its own prototype, so identities with many RoIs in the batch do not dominate. The variance is the ordinary biased
mean of (x - mu)^2 over all RoIs (not the prototypes' variance). y = (x - mu) / sqrt(var + eps), no affine part by
default; running statistics as in BatchNorm (unbiased variance with n = N [x H x W]), used in eval mode. Targets are
passed explicitly (`forward(x, targets)`) instead of the official register/reset side channel.
"""

from __future__ import annotations

import torch
from torch import nn

UNLABELED = 5555


def prototype_mean(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-channel mean over prototypes of (N, C) features: one per unlabelled RoI, one per other target value."""
    targets = targets.to(x.device).long()
    unl = targets == UNLABELED
    others = targets[~unl]
    classes, inverse = torch.unique(others, return_inverse=True)
    sums = torch.zeros(len(classes), x.shape[1], device=x.device, dtype=x.dtype).index_add(0, inverse, x[~unl])
    counts = torch.bincount(inverse, minlength=len(classes)).to(x.dtype).unsqueeze(1)
    total = x[unl].sum(0) + (sums / counts).sum(0)
    return total / (int(unl.sum()) + len(classes))


class ProtoNorm(nn.Module):
    """Prototype normalisation of (N, C) or (N, C, H, W) inputs (PrototypeNorm1d / PrototypeNorm2d).

    Args:
        num_features: channels C.
        eps: added to the variance (1e-5).
        momentum: running-statistics momentum (0.1).
        affine: learnable per-channel scale and shift (off in OIMNet++'s embedding head).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"ProtoNorm({self.num_features}) takes (N, C) or (N, C, H, W), got {tuple(x.shape)}")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            if targets is None or len(targets) != x.shape[0]:
                raise ValueError("ProtoNorm in training mode needs one target per RoI (0 background, 5555 unlabelled)")
            pooled = x.mean(dim=(2, 3)) if x.dim() == 4 else x
            mu = prototype_mean(pooled, targets)
            dims = [0] + list(range(2, x.dim()))
            var = ((x - mu.view(shape)) ** 2).mean(dim=dims)
            with torch.no_grad():
                n = x.numel() // x.shape[1]
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mu.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))
                self.num_batches_tracked += 1
        else:
            mu, var = self.running_mean, self.running_var
        out = (x - mu.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out
