"""The AZ-NAS proxies (Lee & Ham, CVPR 2024, section 3): expressivity, progressivity, trainability, complexity.

One random Gaussian batch, Kaiming fan-in re-initialisation, one forward pass that keeps every block output, then
one vector-Jacobian product per block with random +-1 vectors. No labels, no loss, no training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from az_nas.proxies.flops import count_flops

Numerics = Literal["stable", "official", "both"]
NUMERICS = ("stable", "official", "both")


def kaiming_fanin_init(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-in, ReLU gain) conv/linear weights with zero bias; norm layers weight 1, bias 0."""

    def init(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    return model.apply(init)


def feature_rows(feature: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C); (B, T, C) -> (B*T, C): one C-dimensional observation per position and sample."""
    if feature.dim() == 4:
        return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])
    return feature.reshape(-1, feature.shape[-1])


def spectral_entropy(rows: torch.Tensor, numerics: Literal["stable", "official"] = "stable") -> torch.Tensor:
    """Entropy of the normalised eigenvalues of the feature covariance (AZ-NAS eq. 2-3), over the last two dims.

    `rows` is (..., N, C). "official" reproduces the reference float32 computation, including the NaN it returns
    when float32 `eigvalsh` yields a negative eigenvalue; "stable" works in float64, clamps round-off negatives to
    zero, takes 0*log 0 = 0 and gives 0 for an all-zero feature map.
    """
    if numerics == "official":
        x = rows.float()
        x = x - x.mean(dim=-2, keepdim=True)
        sigma = x.transpose(-1, -2) @ x / x.shape[-2]
        eig = torch.linalg.eigvalsh(sigma)
        p = eig / eig.sum(dim=-1, keepdim=True)
        return (-p * torch.log(p + 1e-8)).sum(dim=-1)
    x = rows.double()
    x = x - x.mean(dim=-2, keepdim=True)
    sigma = x.transpose(-1, -2) @ x / x.shape[-2]
    eig = torch.linalg.eigvalsh(sigma).clamp_min(0.0)
    total = eig.sum(dim=-1, keepdim=True)
    p = eig / torch.where(total > 0, total, torch.ones_like(total))
    return -torch.special.xlogy(p, p).sum(dim=-1)


def expressivity_progressivity(entropies: Sequence[float]) -> tuple[float, float]:
    """s^E = sum of per-block entropies (eq. 4); s^P = min entropy gain between consecutive blocks (eq. 5).

    NaN (a failed float32 eigen-solve) becomes -inf, as in the reference code.
    """
    values = np.asarray(entropies, dtype=np.float64)
    expressivity = float(np.sum(values))
    progressivity = float(np.min(values[1:] - values[:-1])) if len(values) > 1 else float("nan")
    return _nan_to_neg_inf(expressivity), _nan_to_neg_inf(progressivity)


def rademacher_like(tensor: torch.Tensor) -> torch.Tensor:
    """Random +-1 entries with probability 1/2 (drawn with `bernoulli` on the global RNG, as the reference does)."""
    return (torch.bernoulli(torch.ones_like(tensor) * 0.5) - 0.5) * 2


def align_gradients(g_in: torch.Tensor, g_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the input-side and output-side probes with matching positions (PixelUnshuffle when stride > 1)."""
    if g_in.dim() == 4 and g_in.shape[2:] != g_out.shape[2:]:
        g_in = nn.functional.pixel_unshuffle(g_in, g_in.shape[2] // g_out.shape[2])
    return feature_rows(g_in), feature_rows(g_out)


def jacobian_spectral_score(rows_in: torch.Tensor, rows_out: torch.Tensor) -> torch.Tensor:
    """Block trainability -sigma - 1/(sigma + 1e-6) + 2 (eq. 6-7), sigma = top singular value of G_in^T G_out / N.

    Works on (..., N, C) batches; its maximum, 0, is reached at sigma = 1.
    """
    mat = rows_in.transpose(-1, -2) @ rows_out / rows_out.shape[-2]
    if mat.shape[-2] < mat.shape[-1]:
        mat = mat.transpose(-1, -2)
    sigma = torch.linalg.svdvals(mat)[..., 0].double()
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def trainability(features: Sequence[torch.Tensor]) -> float:
    """s^T: mean block score over consecutive block outputs, probed from the last block backwards (eq. 7).

    A block whose Jacobian is exactly the identity scores -inf, as in the reference implementation.
    """
    scores: list[float] = []
    for i in reversed(range(1, len(features))):
        f_out, f_in = features[i], features[i - 1]
        g_out = rademacher_like(f_out)
        (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=g_out, retain_graph=False)
        if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
            scores.append(-math.inf)
            continue
        scores.append(float(jacobian_spectral_score(*align_gradients(g_in, g_out))))
    return _nan_to_neg_inf(float(np.mean(scores))) if scores else float("nan")


def find_blocks(model: nn.Module, blocks: Sequence[nn.Module] | None) -> list[nn.Module]:
    """The blocks whose outputs are read: given, else `model.feature_blocks()`, else a Sequential's children."""
    if blocks is not None:
        return list(blocks)
    if hasattr(model, "feature_blocks"):
        return list(model.feature_blocks())
    if isinstance(model, nn.Sequential):
        return list(model.children())
    raise ValueError(
        "cannot tell which blocks to read: pass blocks=[...] (modules whose outputs form the chain of block "
        "features) or give the model a feature_blocks() method"
    )


def capture_block_outputs(
    model: nn.Module, blocks: Sequence[nn.Module], run: Callable[[], object]
) -> list[torch.Tensor]:
    """Outputs of `blocks` in call order while `run()` executes a forward pass."""
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        outputs.append(output)

    handles = [block.register_forward_hook(hook) for block in blocks]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def score_network(
    model: nn.Module,
    inputs: torch.Tensor | None = None,
    *,
    input_shape: Sequence[int] = (64, 3, 32, 32),
    blocks: Sequence[nn.Module] | None = None,
    numerics: Numerics = "stable",
    reinit: bool = True,
    train: bool = True,
    progressivity: bool = True,
    complexity: bool = True,
    copy_model: bool = True,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """The AZ-NAS proxies of one network: {expressivity, progressivity, trainability, complexity}.

    Protocol of the reference code: train mode, Kaiming fan-in re-initialisation, then (unless `inputs` is given) a
    standard normal batch of `input_shape` drawn right after the init, one forward pass, per-block VJPs.
    `seed` seeds the global RNG first (None uses its current state). `numerics="both"` also returns
    `expressivity_official` and `progressivity_official` from the same forward pass. Block outputs may be feature
    maps (B, C, H, W) or tokens (B, N, C); either way each position of each sample is one row. The AutoFormer
    protocol is `reinit=False, train=False, progressivity=False` (ViT init kept, eval mode, E, T and C only).
    """
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
    if seed is not None:
        torch.manual_seed(seed)
    net = copy.deepcopy(model) if copy_model else model
    if device is not None:
        net = net.to(device)
    param = next(net.parameters(), None)
    dev = param.device if param is not None else torch.device(device or "cpu")
    net.train(train)
    if reinit:
        kaiming_fanin_init(net)
    x = torch.randn(tuple(input_shape), device=dev) if inputs is None else inputs.to(dev)
    chosen = find_blocks(net, blocks)
    with torch.enable_grad():
        features = capture_block_outputs(net, chosen, lambda: net(x))
        if len(features) < 2:
            raise ValueError(f"need at least 2 block outputs, got {len(features)}")
        out = _entropy_scores(features, numerics, progressivity)
        out["trainability"] = trainability(features)
    if complexity:
        out["complexity"] = count_flops(net, (1, *x.shape[1:]))
    return out


def _entropy_scores(features: Sequence[torch.Tensor], numerics: Numerics, progressivity: bool) -> dict[str, float]:
    """Expressivity (and progressivity unless switched off) from detached block outputs, in the requested numerics."""
    out: dict[str, float] = {}
    modes = ("stable", "official") if numerics == "both" else (numerics,)
    for mode in modes:
        entropies = [float(spectral_entropy(feature_rows(f.detach()), mode)) for f in features]
        suffix = "_official" if numerics == "both" and mode == "official" else ""
        out["expressivity" + suffix], prog = expressivity_progressivity(entropies)
        if progressivity:
            out["progressivity" + suffix] = prog
    return out


def _nan_to_neg_inf(value: float) -> float:
    return -math.inf if math.isnan(value) else value
