"""AZ-NAS proxies of many NB201 cells at once through `StackedNB201` (one forward/backward per chunk of K cells).

Same maths as `proxies.az.score_network`, vectorised over the K stacked networks: batched covariance
eigenvalues for expressivity/progressivity, batched Jacobian probes for trainability, closed-form FLOPs.
The K networks share one input batch (the one-at-a-time protocol draws one per network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from az_nas.proxies import az
from az_nas.proxies.az import kaiming_fanin_init, spectral_entropy
from az_nas.spaces.nb201 import nb201_flops
from az_nas.spaces.nb201_stacked import StackedNB201


def stacked_rows(feature: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K*C, H, W) -> (K, B*H*W, C): each network's positions as rows."""
    b, kc, h, w = feature.shape
    return feature.view(b, k, kc // k, h, w).permute(1, 0, 3, 4, 2).reshape(k, b * h * w, kc // k)


def stacked_trainability(features: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """(K,) trainability of the stacked networks (mean block score, -inf for identity blocks)."""
    scores = []
    for i in reversed(range(1, len(features))):
        f_out, f_in = features[i], features[i - 1]
        g_out = az.rademacher_like(f_out)
        (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=g_out, retain_graph=False, allow_unused=True)
        if g_in is None:
            g_in = torch.zeros_like(f_in)
        identity = torch.zeros(k, dtype=torch.bool, device=f_out.device)
        if g_in.shape == g_out.shape:
            b = g_in.shape[0]
            identity = (g_in.view(b, k, -1) == g_out.view(b, k, -1)).all(dim=2).all(dim=0)
        if g_in.shape[2:] != g_out.shape[2:]:
            g_in = nn.functional.pixel_unshuffle(g_in, g_in.shape[2] // g_out.shape[2])
        block = az.jacobian_spectral_score(stacked_rows(g_in, k), stacked_rows(g_out, k))
        scores.append(torch.where(identity, torch.full_like(block, -math.inf), block))
    return torch.stack(scores).mean(dim=0)


def score_nb201_batch(
    archs: Sequence[Sequence[str] | str],
    *,
    input_shape: Sequence[int] = (64, 3, 32, 32),
    num_classes: int = 10,
    numerics: str = "stable",
    device: torch.device | str = "cpu",
    inputs: torch.Tensor | None = None,
    network: StackedNB201 | None = None,
    reinit: bool = True,
) -> list[dict[str, float]]:
    """The four AZ-NAS proxies of every cell in `archs`, computed together (one record per cell, same order).

    The stacked network stops at the last cell (the proxies never read the classifier); complexity counts the FLOPs
    of the whole NB201Network with `num_classes` outputs, as `score_network` does one cell at a time.
    """
    net = (network or StackedNB201(archs)).to(device).train()
    if reinit:
        kaiming_fanin_init(net)
    k = net.k
    x = torch.randn(tuple(input_shape), device=device) if inputs is None else inputs.to(device)
    with torch.enable_grad():
        features = az.capture_block_outputs(net, net.feature_blocks(), lambda: net(x))
        modes = ("stable", "official") if numerics == "both" else (numerics,)
        entropies = {
            mode: torch.stack([spectral_entropy(stacked_rows(f.detach(), k), mode) for f in features], dim=1)
            for mode in modes
        }
        train = stacked_trainability(features, k).cpu().numpy()
    records = []
    for j, arch in enumerate(net.archs):
        record: dict[str, float] = {}
        for mode, values in entropies.items():
            suffix = "_official" if numerics == "both" and mode == "official" else ""
            per_block = values[j].float().cpu().numpy().astype(np.float64) if mode == "official" else values[j].cpu().numpy()
            e, p = az.expressivity_progressivity(per_block)
            record["expressivity" + suffix], record["progressivity" + suffix] = e, p
        record["trainability"] = float(train[j]) if not np.isnan(train[j]) else -math.inf
        record["complexity"] = nb201_flops(
            arch, resolution=x.shape[-1], channels=net.channels, cells_per_stage=net.cells_per_stage,
            num_classes=num_classes,
        )
        records.append(record)
    return records
