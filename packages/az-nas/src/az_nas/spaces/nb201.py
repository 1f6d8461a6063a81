"""NAS-Bench-201 search space: arch strings, the 4-node cell DAG with five operations, and the macro network.

Dong & Yang, "NAS-Bench-201", ICLR 2020, section 2.1: a cell is a DAG over nodes 0..3 whose six edges each carry one
of {none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3}; the network is a stem, three stages of N cells at
C, 2C, 4C channels joined by residual reduction blocks, then BN-ReLU, global pooling and a linear classifier.
Modules are registered in the benchmark's construction order so that a seed gives the same initial weights.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import torch
from torch import nn

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (target node, source node) for the six edges, in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

Arch = tuple[str, str, str, str, str, str]


def parse_arch(text: str) -> Arch:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` -> the six edge operations in arch-string order."""
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"NB201 arch string needs 3 nodes separated by '+', got {text!r}")
    ops: list[str] = []
    for target, node in enumerate(nodes, start=1):
        items = [item for item in node.split("|") if item]
        if len(items) != target:
            raise ValueError(f"node {target} of {text!r} needs {target} inputs, got {len(items)}")
        for source, item in enumerate(items):
            op, _, index = item.partition("~")
            if op not in OPS:
                raise ValueError(f"unknown operation {op!r} in {text!r}; expected one of {OPS}")
            if index != str(source):
                raise ValueError(f"edge {item!r} of {text!r} should read from node {source}")
            ops.append(op)
    return tuple(ops)  # type: ignore[return-value]


def format_arch(ops: Sequence[str]) -> str:
    """The six edge operations -> the canonical arch string."""
    if len(ops) != 6 or any(op not in OPS for op in ops):
        raise ValueError(f"an NB201 cell has 6 operations from {OPS}, got {list(ops)}")
    parts, k = [], 0
    for target in (1, 2, 3):
        parts.append("|" + "|".join(f"{ops[k + s]}~{s}" for s in range(target)) + "|")
        k += target
    return "+".join(parts)


def all_archs() -> Iterator[Arch]:
    """All 5^6 = 15,625 cells (lexicographic in edge order, last edge fastest)."""
    return itertools.product(OPS, repeat=6)  # type: ignore[return-value]


def random_arch(rng: random.Random) -> Arch:
    """One cell drawn uniformly."""
    return tuple(rng.choice(OPS) for _ in EDGES)  # type: ignore[return-value]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k, stride, pad k//2, no bias) -> BN: the NB201 convolution operation."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The `none` operation: multiplies by zero (keeps the graph, so gradients are exact zeros)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def build_op(name: str, channels: int) -> nn.Module:
    """One edge operation of a normal cell (stride 1, same channels in and out)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 operation {name!r}")


class Cell(nn.Module):
    """The NB201 cell: node_i = sum over j < i of op_{j->i}(node_j); the output is node 3."""

    def __init__(self, arch: Sequence[str], channels: int) -> None:
        super().__init__()
        self.arch = tuple(arch)
        self.edges = nn.ModuleList(build_op(op, channels) for op in self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for target in (1, 2, 3):
            total: torch.Tensor | int = 0
            for source in range(target):
                total = total + self.edges[k](nodes[source])
                k += 1
            nodes.append(total)  # type: ignore[arg-type]
        return nodes[-1]


class ResidualReduction(nn.Module):
    """ResNet basic block with stride 2 between stages: two ReLU-Conv3x3-BN, shortcut AvgPool(2) + Conv1x1."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 macro network (TinyNetwork): stem, 3 stages of `cells_per_stage` cells, 2 residual reductions."""

    def __init__(
        self,
        arch: Sequence[str] | str,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.arch = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cells = nn.ModuleList()
        c_prev = channels
        for stage in range(3):
            c_curr = channels * 2**stage
            if stage > 0:
                self.cells.append(ResidualReduction(c_prev, c_curr))
            self.cells.extend(Cell(self.arch, c_curr) for _ in range(cells_per_stage))
            c_prev = c_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def feature_blocks(self) -> list[nn.Module]:
        """The blocks whose outputs AZ-NAS reads: the stem and every cell (18 for N=5)."""
        return [self.stem, *self.cells]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's output (before the final BN-ReLU and pooling)."""
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.forward_features(x))
        return self.classifier(self.global_pooling(x).flatten(1))


def build_model(arch: Sequence[str] | str, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5):
    """The NB201 network for `arch` (string or six operations)."""
    return NB201Network(arch, channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes)


def nb201_flops(
    arch: Sequence[str] | str, resolution: int = 32, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10
) -> float:
    """Closed-form multiply-accumulates of NB201Network (same count as `proxies.flops.count_flops`, batch 1)."""
    ops = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
    per_cell = ops.count("nor_conv_3x3") * 9 + ops.count("nor_conv_1x1")
    total = 3 * channels * 9 * resolution**2
    for stage in range(3):
        c, hw = channels * 2**stage, (resolution // 2**stage) ** 2
        if stage > 0:
            total += (c // 2 * c * 9 + c * c * 9 + c // 2 * c) * hw
        total += cells_per_stage * per_cell * c * c * hw
    return float(total + 4 * channels * num_classes + num_classes)
