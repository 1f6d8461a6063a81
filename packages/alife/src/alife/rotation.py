"""Class-wise Cayley rotations of ALIFE-M (Sec. 3.2) and their training objective, batched over classes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CayleyRotation(nn.Module):
    """One rotation per class: R_k = (I - A_k)(I + A_k)^{-1} with A_k = (U_k - U_k^T) / 2 skew-symmetric and U_k
    strictly upper triangular holding D(D-1)/2 parameters (Cayley transform: orthogonal, determinant +1).

    `theta` (K, D(D-1)/2) fills each U_k row-major (`torch.triu_indices` order). The init is uniform in
    +-1/sqrt(D(D-1)/2) (the default init of the official 1x1-conv storage), so every R_k starts near identity.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        count = dim * (dim - 1) // 2
        bound = 1 / math.sqrt(count) if count else 0.0
        self.theta = nn.Parameter(torch.empty(num_classes, count).uniform_(-bound, bound))
        self.register_buffer("rows", torch.triu_indices(dim, dim, 1)[0], persistent=False)
        self.register_buffer("cols", torch.triu_indices(dim, dim, 1)[1], persistent=False)

    def skew(self) -> torch.Tensor:
        """A (K, D, D), skew-symmetric."""
        upper = self.theta.new_zeros(self.num_classes, self.dim, self.dim)
        upper[:, self.rows, self.cols] = self.theta
        return 0.5 * (upper - upper.transpose(1, 2))

    def matrices(self) -> torch.Tensor:
        """R (K, D, D) in one batched solve: (I - A)(I + A)^{-1} = (I + A)^{-1}(I - A) since both commute."""
        skew = self.skew()
        eye = torch.eye(self.dim, dtype=skew.dtype, device=skew.device).expand_as(skew)
        return torch.linalg.solve(eye + skew, eye - skew)

    def matrices_loop(self) -> torch.Tensor:
        """The same matrices with one inverse per class (a Python loop, as the official `get_matrix(k)`), for timing."""
        skew = self.skew()
        eye = torch.eye(self.dim, dtype=skew.dtype, device=skew.device)
        return torch.stack([(eye - a) @ torch.linalg.inv(eye + a) for a in skew])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Rotate class k's vectors by R_k: (K, D) or (K, M, D) -> same shape."""
        return rotate(features, self.matrices())


def rotate(features: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x_k -> R_k x_k for every class k: features (K, D) or (K, M, D), matrices (K, D, D)."""
    if features.dim() == 2:
        return torch.einsum("kij,kj->ki", matrices, features)
    return torch.einsum("kij,kmj->kmi", matrices, features)


def representative_weights(memory: torch.Tensor, features: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """w_k(x) = softmax over the pixels x of T * sum_m relu(cos(m_km, f(x))) (train_matrices.py).
    memory (K, M, D), features (P, D) -> (K, P)."""
    similarity = torch.einsum("kmd,pd->kmp", F.normalize(memory, dim=-1), F.normalize(features, dim=-1))
    return (temperature * similarity.relu().sum(dim=1)).softmax(dim=1)


def rotation_objective(
    matrices: torch.Tensor,
    memory: torch.Tensor,
    feature_prev: torch.Tensor,
    feature_curr: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    temperature: float = 10.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ALIFE-M rotation loss on one batch of pixels (Sec. 3.2): per old class k a representative of the previous
    and the current feature space (pixel weights from the memory), both centred by their mean over classes;
    r_k = R_k rep_prev_k; loss = (1 - lam) CE(classifier(r_k + off_curr), k) + lam mean_k (1 - cos(r_k, rep_curr_k)).

    matrices (K, D, D); memory (K, M, D); feature_prev/curr (P, D) at the same pixels; weight (C, D), bias (C,)
    of the current classifier (class k = row k)."""
    pixel_weights = representative_weights(memory, feature_prev, temperature)
    rep_prev, rep_curr = pixel_weights @ feature_prev, pixel_weights @ feature_curr
    off_prev, off_curr = rep_prev.mean(dim=0), rep_curr.mean(dim=0)
    rep_hat = rotate(rep_prev - off_prev, matrices)
    logits = (rep_hat + off_curr) @ weight.t() + bias
    target = torch.arange(matrices.shape[0], device=logits.device)
    ce = F.cross_entropy(logits, target)
    cs = (1 - F.cosine_similarity(rep_hat, rep_curr - off_curr, dim=1)).mean()
    parts = {"ce": ce, "cs": cs, "pixel_weights": pixel_weights, "rep_prev": rep_prev, "rep_curr": rep_curr,
             "rep_hat": rep_hat, "logits": logits}
    return (1 - lam) * ce + lam * cs, parts
