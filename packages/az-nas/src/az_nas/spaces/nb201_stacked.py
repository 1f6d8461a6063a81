"""K NAS-Bench-201 networks evaluated as one: channels of all K networks stacked, grouped convolutions per op.

Every NB201 operation acts per channel group and BatchNorm normalises per channel, so the networks stay independent:
block outputs are (B, K*C, H, W) and slice k is exactly network k's output on the shared input batch. One forward
and one backward then score K cells, which keeps a GPU busy where one small cell at a time cannot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from az_nas.spaces.nb201 import NB201Network, parse_arch

CONV_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def _grouped_relu_conv_bn(groups: int, c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(groups * c_in, groups * c_out, kernel, stride=stride, padding=kernel // 2, bias=False, groups=groups),
        nn.BatchNorm2d(groups * c_out),
    )


class StackedCell(nn.Module):
    """One cell position of K networks: per edge, one grouped module per operation type over the archs using it."""

    def __init__(self, archs: Sequence[Sequence[str]], channels: int) -> None:
        super().__init__()
        self.k, self.c = len(archs), channels
        self.groups = nn.ModuleDict()
        self.plan: list[list[tuple[str, str]]] = []  # per edge: (op, key of its index buffer / module)
        for edge in range(6):
            entries = []
            for op in ("nor_conv_1x1", "nor_conv_3x3", "skip_connect", "avg_pool_3x3"):
                idx = [k for k, arch in enumerate(archs) if arch[edge] == op]
                if not idx:
                    continue
                key = f"e{edge}_{op}"
                self.register_buffer(f"idx_{key}", torch.tensor(idx, dtype=torch.long), persistent=False)
                if op in CONV_KERNELS:
                    self.groups[key] = _grouped_relu_conv_bn(len(idx), channels, channels, CONV_KERNELS[op])
                entries.append((op, key))
            self.plan.append(entries)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        nodes = [x.view(b, self.k, self.c, h, w)]
        edge = 0
        for target in (1, 2, 3):
            total = x.new_zeros(b, self.k, self.c, h, w)
            for source in range(target):
                for op, key in self.plan[edge]:
                    idx = getattr(self, f"idx_{key}")
                    part = nodes[source].index_select(1, idx)
                    if op != "skip_connect":
                        flat = part.reshape(b, -1, h, w)
                        flat = self.groups[key](flat) if op in CONV_KERNELS else self.pool(flat)
                        part = flat.view(b, len(idx), self.c, h, w)
                    total = total.index_add(1, idx, part)
                edge += 1
            nodes.append(total)
        return nodes[-1].reshape(b, self.k * self.c, h, w)


class StackedReduction(nn.Module):
    """The residual reduction block of K networks (grouped convolutions)."""

    def __init__(self, k: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = _grouped_relu_conv_bn(k, c_in, c_out, 3, stride=2)
        self.conv_b = _grouped_relu_conv_bn(k, c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(k * c_in, k * c_out, 1, bias=False, groups=k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class StackedNB201(nn.Module):
    """The feature part (stem and cells) of K NB201 networks on one shared input: outputs (B, K*C_stage, H, W)."""

    def __init__(self, archs: Sequence[Sequence[str] | str], channels: int = 16, cells_per_stage: int = 5) -> None:
        super().__init__()
        self.archs = [parse_arch(a) if isinstance(a, str) else tuple(a) for a in archs]
        k = self.k = len(self.archs)
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.stem = nn.Sequential(nn.Conv2d(3, k * channels, 3, padding=1, bias=False), nn.BatchNorm2d(k * channels))
        self.cells = nn.ModuleList()
        c_prev = channels
        for stage in range(3):
            c_curr = channels * 2**stage
            if stage > 0:
                self.cells.append(StackedReduction(k, c_prev, c_curr))
            self.cells.extend(StackedCell(self.archs, c_curr) for _ in range(cells_per_stage))
            c_prev = c_curr

    def feature_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.cells]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return x

    @torch.no_grad()
    def load_from_networks(self, nets: Sequence[NB201Network]) -> StackedNB201:
        """Copy the weights of K single networks (same archs, same order) into the stacked one."""
        if [n.arch for n in nets] != self.archs:
            raise ValueError("networks and stacked archs differ")
        _copy_cat(self.stem, [n.stem for n in nets])
        for pos, cell in enumerate(self.cells):
            singles = [n.cells[pos] for n in nets]
            if isinstance(cell, StackedReduction):
                _copy_cat(cell, singles)
                continue
            for edge, entries in enumerate(cell.plan):
                for op, key in entries:
                    if op in CONV_KERNELS:
                        idx = getattr(cell, f"idx_{key}").tolist()
                        _copy_cat(cell.groups[key], [singles[k].edges[edge] for k in idx])
        return self


def _copy_cat(target: nn.Module, sources: Sequence[nn.Module]) -> None:
    """target's parameters/buffers = concatenation along dim 0 of the sources' matching tensors."""
    named = [dict(s.state_dict()) for s in sources]
    for name, tensor in target.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        tensor.copy_(torch.cat([n[name] for n in named], dim=0))
