"""Class-wise Cayley rotations of ALIFE-M (Sec. 3.2) and their training objective, batched over classes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _transposed_system(theta: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """(I + A)^T = I - A (K, D, D) from theta (K, P) in one gather: entry i of the flat D x D matrix is entry
    source[i] of [1, -theta / 2, +theta / 2] (diagonal, upper (r, c), lower (c, r))."""
    half = 0.5 * theta
    values = torch.cat([half.new_ones(theta.shape[0], 1), -half, half], dim=1)
    dim = math.isqrt(source.numel())
    return values.index_select(1, source).view(theta.shape[0], dim, dim)


class _CayleySolve(torch.autograd.Function):
    """y = (I + A)^{-1} b for every class at once, A skew-symmetric with upper entries theta / 2: one batched LU of
    the K systems and one batched triangular solve. The backward reuses the LU: grad_b = (I + A)^{-T} g,
    grad_(I + A) = -grad_b y^T (one bmm over classes), grad_theta = (grad_(I+A) - grad_(I+A)^T)_(r < c) / 2."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, rhs: torch.Tensor, source: torch.Tensor, upper: torch.Tensor,
                lower: torch.Tensor) -> torch.Tensor:
        # I - A built row-major is I + A column-major: LAPACK factors it without a transposing copy
        lu, pivots = torch.linalg.lu_factor(_transposed_system(theta, source).transpose(1, 2))
        solution = torch.linalg.lu_solve(lu, pivots, rhs)
        ctx.save_for_backward(lu, pivots, solution, upper, lower)
        return solution

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lu, pivots, solution, upper, lower = ctx.saved_tensors
        grad_rhs = torch.linalg.lu_solve(lu, pivots, grad.contiguous(), adjoint=True)
        grad_theta = None
        if ctx.needs_input_grad[0]:
            outer = torch.bmm(grad_rhs, solution.transpose(1, 2)).flatten(1)  # minus the grad of I + A
            grad_theta = -0.5 * (outer.index_select(1, upper) - outer.index_select(1, lower))
        return grad_theta, grad_rhs if ctx.needs_input_grad[1] else None, None, None, None


class CayleyRotation(nn.Module):
    """One rotation per class: R_k = (I - A_k)(I + A_k)^{-1} with A_k = (U_k - U_k^T) / 2 skew-symmetric and U_k
    strictly upper triangular holding D(D-1)/2 parameters (Cayley transform: orthogonal, determinant +1).

    `theta` (K, D(D-1)/2) fills each U_k row-major (`torch.triu_indices` order). The init is uniform in
    +-1/sqrt(D(D-1)/2) (the default init of the official 1x1-conv storage), so every R_k starts near identity.

    All classes go through one batched LU of the K systems I + A_k. Since (I - A) = 2I - (I + A),
    R = 2 (I + A)^{-1} - I, so rotating vectors needs no matrix at all: R x = 2 y - x with (I + A) y = x, one batched
    solve over classes whose backward reuses the LU (`forward`); `matrices()` forms every R_k the same way.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        count = dim * (dim - 1) // 2
        bound = 1 / math.sqrt(count) if count else 0.0
        self.theta = nn.Parameter(torch.empty(num_classes, count).uniform_(-bound, bound))
        rows, cols = torch.triu_indices(dim, dim, 1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        # flat positions of the upper (r, c) and lower (c, r) entries, and where each flat entry of I - A comes from
        self.register_buffer("upper", rows * dim + cols, persistent=False)
        self.register_buffer("lower", cols * dim + rows, persistent=False)
        source = torch.zeros(dim * dim, dtype=torch.long)
        source[self.upper] = torch.arange(1, count + 1)
        source[self.lower] = torch.arange(count + 1, 2 * count + 1)
        self.register_buffer("source", source, persistent=False)

    def skew(self) -> torch.Tensor:
        """A (K, D, D), skew-symmetric."""
        upper = self.theta.new_zeros(self.num_classes, self.dim, self.dim)
        upper[:, self.rows, self.cols] = self.theta
        return 0.5 * (upper - upper.transpose(1, 2))

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """(I + A_k)^{-1} rhs_k for every class in one batched solve: rhs (K, D, M) -> (K, D, M)."""
        return _CayleySolve.apply(self.theta, rhs, self.source, self.upper, self.lower)

    def matrices(self) -> torch.Tensor:
        """R (K, D, D) = 2 (I + A)^{-1} - I for all classes in one batched solve (Cayley transform, Sec. 3.2)."""
        eye = torch.eye(self.dim, dtype=self.theta.dtype, device=self.theta.device)
        return 2 * self.solve(eye.expand(self.num_classes, -1, -1)) - eye

    def matrices_loop(self) -> torch.Tensor:
        """The same matrices with one inverse per class (a Python loop, as the official `get_matrix(k)`), for timing."""
        skew = self.skew()
        eye = torch.eye(self.dim, dtype=skew.dtype, device=skew.device)
        return torch.stack([(eye - a) @ torch.linalg.inv(eye + a) for a in skew])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Rotate class k's vectors by R_k: (K, D) or (K, M, D) -> same shape; R x = 2 (I + A)^{-1} x - x in one
        batched solve over classes (no K x D x D inverse is formed)."""
        if features.dim() == 2:
            return 2 * self.solve(features.unsqueeze(2)).squeeze(2) - features
        return 2 * self.solve(features.transpose(1, 2)).transpose(1, 2) - features

    def forward_loop(self, features: torch.Tensor) -> torch.Tensor:
        """`forward` as the official code computes it: per class, build R_k (one inverse), then multiply; for timing."""
        skew = self.skew()
        eye = torch.eye(self.dim, dtype=skew.dtype, device=skew.device)
        return torch.stack([x @ ((eye - a) @ torch.linalg.inv(eye + a)).t() for a, x in zip(skew, features)])


def rotate(features: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x_k -> R_k x_k for every class k: features (K, D) or (K, M, D), matrices (K, D, D); one bmm over classes."""
    if features.dim() == 2:
        return torch.bmm(matrices, features.unsqueeze(2)).squeeze(2)
    return torch.bmm(features, matrices.transpose(1, 2))


def representative_weights(memory: torch.Tensor, features: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """w_k(x) = softmax over the pixels x of T * sum_m relu(cos(m_km, f(x))) (train_matrices.py).
    memory (K, M, D), features (P, D) -> (K, P)."""
    similarity = torch.einsum("kmd,pd->kmp", F.normalize(memory, dim=-1), F.normalize(features, dim=-1))
    return (temperature * similarity.relu().sum(dim=1)).softmax(dim=1)


def rotation_objective(
    rotation: torch.Tensor | CayleyRotation,
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

    rotation: the (K, D, D) matrices or the CayleyRotation itself (one batched solve, no matrix formed); memory
    (K, M, D); feature_prev/curr (P, D) at the same pixels; weight (C, D), bias (C,) of the current classifier
    (class k = row k)."""
    pixel_weights = representative_weights(memory, feature_prev, temperature)
    rep_prev, rep_curr = pixel_weights @ feature_prev, pixel_weights @ feature_curr
    off_prev, off_curr = rep_prev.mean(dim=0), rep_curr.mean(dim=0)
    centred = rep_prev - off_prev
    rep_hat = rotate(centred, rotation) if isinstance(rotation, torch.Tensor) else rotation(centred)
    logits = (rep_hat + off_curr) @ weight.t() + bias
    target = torch.arange(rep_hat.shape[0], device=logits.device)
    ce = F.cross_entropy(logits, target)
    cs = (1 - F.cosine_similarity(rep_hat, rep_curr - off_curr, dim=1)).mean()
    parts = {"ce": ce, "cs": cs, "pixel_weights": pixel_weights, "rep_prev": rep_prev, "rep_curr": rep_curr,
             "rep_hat": rep_hat, "logits": logits}
    return (1 - lam) * ce + lam * cs, parts
