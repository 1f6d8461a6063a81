"""Baseline zero-cost proxies under one call, for comparison with AZ-NAS in the same run.

NASWOT (Mellor et al., ICML 2021, eq. 2), synflow (Tanaka et al., NeurIPS 2020, eq. 5), grad_norm and SNIP
(Abdelfattah et al., ICLR 2021; Lee et al., ICLR 2019, eq. 4) and Zen-score (Lin et al., ICCV 2021, eq. 6).
All take random inputs (and random labels where a loss is needed), so no data is read.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from az_nas.proxies.az import capture_block_outputs, find_blocks, score_network
from az_nas.proxies.flops import count_flops

BASELINES = ("naswot", "synflow", "grad_norm", "snip", "zen", "flops", "params")
ALL_PROXIES = ("az", *BASELINES)


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[-1] if isinstance(out, (tuple, list)) else out


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log|K_H|, K_H = sum over ReLUs of c c^T + (1-c)(1-c)^T for the samples' binary activation codes c."""
    batch = x.shape[0]
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=x.device)

    def hook(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        code = (inputs[0].detach().reshape(batch, -1) > 0).double()
        kernel.add_(code @ code.T + (1 - code) @ (1 - code).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model.train()
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.linalg.slogdet(kernel)[1])


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    """sum |theta * dR/dtheta| with R = sum of outputs of the |theta| network on an all-ones input (float64, no BN)."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for param in net.parameters():
            param.abs_()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    net.zero_grad()
    _logits(net, ones).sum().backward()
    layers = _weighted_layers(net)
    return float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in layers if m.weight.grad is not None))


def gradient_proxies(model: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
    """grad_norm (sum of per-layer weight-gradient L2 norms) and SNIP (sum |theta * dL/dtheta|), random labels."""
    net = copy.deepcopy(model).train()
    net.zero_grad()
    logits = _logits(net, x)
    labels = torch.randint(0, logits.shape[1], (x.shape[0],), device=x.device, generator=generator)
    nn.functional.cross_entropy(logits, labels).backward()
    layers = [m for m in _weighted_layers(net) if m.weight.grad is not None]
    return {
        "grad_norm": float(sum(m.weight.grad.norm() for m in layers)),
        "snip": float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in layers)),
    }


def zen_score(
    model: nn.Module, x: torch.Tensor, blocks: Sequence[nn.Module] | None = None, alpha: float = 0.01
) -> float:
    """log E|f(x) - f(x + alpha*eps)| + sum over BN layers of log sqrt(mean batch variance), Gaussian weights."""
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.normal_()
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d) and module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
    last = find_blocks(net, blocks)[-1]
    variances: list[torch.Tensor] = []

    def bn_hook(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        variances.append(inputs[0].var(dim=(0, 2, 3), unbiased=False).mean())

    noise = torch.randn_like(x)
    with torch.no_grad():
        handles = [m.register_forward_hook(bn_hook) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        try:
            (f_x,) = capture_block_outputs(net, [last], lambda: net(x))[-1:]
        finally:
            for handle in handles:
                handle.remove()
        (f_mix,) = capture_block_outputs(net, [last], lambda: net(x + alpha * noise))[-1:]
        delta = (f_x - f_mix).abs().flatten(1).sum(dim=1).mean()
        log_bn = sum(0.5 * math.log(max(float(v), 1e-30)) for v in variances)
    return float(torch.log(delta)) + log_bn


def score_proxies(
    model: nn.Module,
    names: Sequence[str] = ALL_PROXIES,
    *,
    input_shape: Sequence[int] = (64, 3, 32, 32),
    blocks: Sequence[nn.Module] | None = None,
    numerics: str = "stable",
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """AZ-NAS (`"az"`: its four proxies) and/or baselines of one network in one call; keys are proxy names.

    Each baseline sees the network as given (its own initialisation), except Zen-score (Gaussian weights, as in
    its paper); AZ-NAS re-initialises a copy. `seed` seeds the global RNG once before everything.
    """
    unknown = [n for n in names if n not in ALL_PROXIES]
    if unknown:
        raise ValueError(f"unknown proxies {unknown}; choose from {ALL_PROXIES}")
    if seed is not None:
        torch.manual_seed(seed)
    if device is not None:
        model = model.to(device)
    param = next(model.parameters())
    x = torch.randn(tuple(input_shape), device=param.device)
    out: dict[str, float] = {}
    if "az" in names:
        out.update(score_network(model, input_shape=input_shape, blocks=blocks, numerics=numerics))  # type: ignore[arg-type]
    if "naswot" in names:
        out["naswot"] = naswot(copy.deepcopy(model), x)
    if "synflow" in names:
        out["synflow"] = synflow(model, x)
    if "grad_norm" in names or "snip" in names:
        grads = gradient_proxies(model, x)
        out.update({k: v for k, v in grads.items() if k in names})
    if "zen" in names:
        out["zen"] = zen_score(model, x, blocks=blocks)
    if "flops" in names:
        out["flops"] = out.get("complexity", count_flops(model, (1, *input_shape[1:])))
    if "params" in names:
        out["params"] = float(sum(p.numel() for p in model.parameters()))
    return out
