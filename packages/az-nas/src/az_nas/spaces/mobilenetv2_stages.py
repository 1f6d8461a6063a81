"""Our simpler MobileNetV2-like space (`--space mobilenetv2-stages`), kept as an option beside the official one.

Not the official genome (see `spaces/mobilenetv2.py`): here every stage is a run of identical inverted residuals
and one mutation changes one of its choices. A network is a stem (3x3 conv, stride 2), a list of stages of
inverted-residual layers (1x1 expand, kxk depthwise, 1x1 project, residual add then ReLU), a final 1x1 conv, global
pooling and a classifier. The searchable choices per stage are kernel {3, 5, 7}, expansion {1, 2, 4, 6}, output
width and depth; evolution mutates them under a FLOPs budget and a layer cap (the paper's 450M/600M/1G and 14/14/16 numbers, but here the cap counts inverted
residuals only and the FLOPs are conv/linear multiply-accumulates without BN, so the budgets are not the official
ones).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from az_nas.spaces.mobilenetv2 import StemLayersHead

KERNELS = (3, 5, 7)
EXPANSIONS = (1, 2, 4, 6)
BUDGETS = {"450M": (450e6, 14), "600M": (600e6, 14), "1G": (1000e6, 16)}


@dataclass(frozen=True)
class Stage:
    """`depth` inverted-residual layers; the first has `stride` and changes the width to `out_channels`."""

    out_channels: int
    stride: int
    depth: int
    kernel: int = 3
    expansion: int = 6


@dataclass(frozen=True)
class MBV2Genome:
    """A whole network of the space."""

    stem_channels: int
    stages: tuple[Stage, ...]
    last_channels: int

    @property
    def num_layers(self) -> int:
        return sum(s.depth for s in self.stages)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> MBV2Genome:
        data = json.loads(text)
        return MBV2Genome(data["stem_channels"], tuple(Stage(**s) for s in data["stages"]), data["last_channels"])


# The initial structure of the reference evolution (ZenNAS's small IDW seed network).
INITIAL = MBV2Genome(
    stem_channels=8,
    stages=(Stage(32, 2, 1, 3, 6), Stage(48, 2, 1, 3, 6), Stage(96, 2, 1, 3, 6), Stage(128, 2, 1, 3, 6)),
    last_channels=2048,
)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> kxk depthwise -> 1x1 project, plus a shortcut (1x1 conv when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.body = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden),
            conv_bn(hidden, c_out, 1, relu=False),
        )
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out else conv_bn(c_in, c_out, 1, stride=stride, relu=False)
        )
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class MBV2Network(StemLayersHead):
    """The network of a genome; `feature_blocks()` = stem, every inverted-residual layer, final 1x1 conv."""

    def __init__(self, genome: MBV2Genome, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.genome = genome
        self.stem = conv_bn(in_channels, genome.stem_channels, 3, stride=2)
        layers, c_in = [], genome.stem_channels
        for stage in genome.stages:
            for i in range(stage.depth):
                stride = stage.stride if i == 0 else 1
                layers.append(InvertedResidual(c_in, stage.out_channels, stride, stage.kernel, stage.expansion))
                c_in = stage.out_channels
        self.layers = nn.ModuleList(layers)
        self.head = conv_bn(c_in, genome.last_channels, 1)
        self.classifier = nn.Linear(genome.last_channels, num_classes)


def _round8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)


def mutate(genome: MBV2Genome, rng: random.Random, max_layers: int, n_changes: int = 1) -> MBV2Genome:
    """Change `n_changes` random stages: kernel, expansion, width (x0.5..x2, multiple of 8) or depth (+-1, +-2)."""
    stages = list(genome.stages)
    for _ in range(n_changes):
        i = rng.randrange(len(stages))
        stage = stages[i]
        what = rng.choice(("kernel", "expansion", "width", "depth"))
        if what == "kernel":
            stage = replace(stage, kernel=rng.choice(KERNELS))
        elif what == "expansion":
            stage = replace(stage, expansion=rng.choice(EXPANSIONS))
        elif what == "width":
            stage = replace(stage, out_channels=_round8(stage.out_channels * rng.choice((0.5, 0.75, 1.25, 1.5, 2.0))))
        else:
            others = sum(s.depth for j, s in enumerate(stages) if j != i)
            depth = stage.depth + rng.choice((-2, -1, 1, 2))
            stage = replace(stage, depth=max(1, min(depth, max_layers - others)))
        stages[i] = stage
    return replace(genome, stages=tuple(stages))
