"""Complexity proxy s^C: multiply-accumulate count of convolutions and linear layers for one input (AZ-NAS eq. 8).

Counted like the NAS-Bench-201 API (xautodl's counter): k*k*C_in/groups*C_out per output position plus the bias,
in*out (+out) per linear layer; pooling, normalisation and activations are free.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def count_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> float:
    """Multiply-accumulates of one forward pass of `model` on a zero input of `input_shape` (batch 1 recommended)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        positions = output.shape[0] * output.shape[2] * output.shape[3]
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += positions * module.out_channels * (kernel + (1 if module.bias is not None else 0))

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        rows = output.numel() // module.out_features
        total += rows * module.out_features * (module.in_features + (1 if module.bias is not None else 0))

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return float(total)
