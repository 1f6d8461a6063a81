"""Post-hoc temperature scaling (Guo et al. 2017, section 4.2): logits / T with T fitted on validation data.

Methods:
- "nll" (default, the textbook fit): minimise the validation NLL over T with L-BFGS on log T (T kept in
  [0.01, 100]; with uninformative logits the optimum runs off to infinity).
- "ece_grid": the official ACLS/RankMixup search (`ModelWithTemperature.set_temperature`): T = 0.1, 0.2, ...,
  10.0 accumulated by repeated `T += 0.1`, keeping the first T with the lowest 15-bin ECE.
- "nll_grid": the same grid, keeping the lowest NLL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cvlab_shared.metrics.calibration import DEFAULT_BINS, ece

METHODS = ("nll", "ece_grid", "nll_grid")


def official_grid(steps: int = 100, start: float = 0.1, step: float = 0.1) -> list[float]:
    """The grid exactly as the official loop builds it (float error included, e.g. 1.7000000000000004)."""
    values, t = [], start
    for _ in range(steps):
        values.append(t)
        t += step
    return values


def _grid_search(logits: Tensor, targets: Tensor, criterion: str, n_bins: int) -> float:
    best_t, best = 1.0, float("inf")
    for t in official_grid():
        scaled = logits / t
        value = (ece(scaled, targets, n_bins) if criterion == "ece" else F.cross_entropy(scaled, targets)).item()
        if value < best:
            best_t, best = t, value
    return best_t


def _fit_nll(logits: Tensor, targets: Tensor, max_iter: int = 50) -> float:
    with torch.inference_mode(False), torch.enable_grad():  # also callable from Lightning's test loop
        return _lbfgs_temperature(logits.detach().double().clone(), targets.clone(), max_iter)


def _lbfgs_temperature(logits: Tensor, targets: Tensor, max_iter: int) -> float:
    log_t = torch.zeros(1, dtype=torch.float64, device=logits.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(min=1e-2, max=1e2))


def fit_temperature(logits: Tensor, targets: Tensor, method: str = "nll", n_bins: int = DEFAULT_BINS) -> float:
    """The temperature T for `logits / T`, fitted on these (validation) logits by `method` (see module doc)."""
    if method not in METHODS:
        raise ValueError(f"unknown temperature method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "nll":
        return _fit_nll(logits, targets)
    return _grid_search(logits.detach(), targets, "ece" if method == "ece_grid" else "nll", n_bins)
