"""The MobileNetV2 search space of the AZ-NAS ImageNet experiments (ZenNAS's "IDW" space), the default of the search.

Written from the description of the official space (AZ-NAS section 4.2; ZenNAS's SuperResIDW blocks):
- a network is a stem (3x3 conv, stride 2, BN, ReLU), a list of blocks and a head (1x1 conv to 2048, BN, ReLU), then
  global pooling and a linear classifier;
- a block (kernel k, expansion e, output width c, bottleneck width b, stride s, depth d) is d "layers", and each layer
  is two inverted residuals: in -> b (1x1 expand to e*b, kxk depthwise with the block's stride in the first layer,
  1x1 project to b) and b -> c (1x1 expand to e*c, kxk depthwise, 1x1 project to c). Each residual adds a shortcut
  (a 1x1 conv + BN projection in the first layer of the block, and wherever the widths differ) and then a ReLU;
- the layer count of the layer cap is the sum of the depths plus one for the stem and one for the head, so the
  450M budget's cap of 14 leaves 12 layers, i.e. up to 24 inverted residuals;
- FLOPs are counted as the official counter does: convolutions (no bias), every BatchNorm (one per output element),
  the classifier's in * out, and a projection shortcut at (output size / stride)^2 positions (the official counter
  divides by the stride twice);
- a mutation picks one of the stem, the blocks and the head (the head never changes) and replaces it by a random
  neighbour: the stem changes width; a block draws kernel, expansion, width, bottleneck width and depth jointly
  (widths x {1/2.5, 1/2, 1/1.5, 1/1.25, 1, 1.25, 1.5, 2, 2.5} rounded to multiples of 8, depth +-2); a block of 6 or
  more layers is then split into 3 layers and the rest (a second block at stride 1);
- the initial network has one layer (two inverted residuals) per stage at widths 32, 48, 96, 128.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

KERNELS = (3, 5, 7)
EXPANSIONS = (1, 2, 4, 6)
WIDTH_FACTORS = (2.5, 2.0, 1.5, 1.25, 1.0, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)
BUDGETS = {"450M": (450e6, 14), "600M": (600e6, 14), "1G": (1000e6, 16)}
SPLIT_AT = 6  # a block of this many layers or more is split in two after a mutation


@dataclass(frozen=True)
class IDWBlock:
    """`depth` layers of two inverted residuals each; the first has `stride` and the projection shortcut."""

    out_channels: int
    stride: int
    bottleneck: int
    depth: int
    kernel: int = 3
    expansion: int = 6


@dataclass(frozen=True)
class MBV2Genome:
    """A whole network of the space: stem width, the blocks, head width."""

    stem_channels: int
    blocks: tuple[IDWBlock, ...]
    last_channels: int = 2048

    @property
    def num_layers(self) -> int:
        """The official layer count: every block's depth, plus the stem and the head."""
        return sum(b.depth for b in self.blocks) + 2

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> MBV2Genome:
        data = json.loads(text)
        if "blocks" not in data:
            raise ValueError(
                "not a genome of the official MobileNetV2 space (no 'blocks'); use space mobilenetv2-stages"
            )
        return MBV2Genome(data["stem_channels"], tuple(IDWBlock(**b) for b in data["blocks"]), data["last_channels"])


# The initial structure of the official evolution (its 450M / 600M / 1G scripts all start here).
INITIAL = MBV2Genome(
    stem_channels=8,
    blocks=(IDWBlock(32, 2, 8, 1), IDWBlock(48, 2, 32, 1), IDWBlock(96, 2, 48, 1), IDWBlock(128, 2, 96, 1)),
)


def round8(value: float) -> int:
    """Nearest multiple of 8, at least 8 (the official channel rounding)."""
    return max(8, int(round(value / 8)) * 8)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand to `hidden` -> kxk depthwise -> 1x1 project, plus the shortcut, then ReLU (one feature block)."""

    def __init__(self, c_in: int, c_out: int, hidden: int, kernel: int, stride: int, project: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden),
            conv_bn(hidden, c_out, 1, relu=False),
        )
        self.stride = stride
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), nn.BatchNorm2d(c_out)) if project else nn.Identity()
        )
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def block_residuals(block: IDWBlock, c_in: int) -> list[tuple[int, int, int, int, bool]]:
    """(c_in, c_out, hidden, stride, projection) of the 2 * depth inverted residuals of `block`."""
    out = []
    for layer in range(block.depth):
        stride = block.stride if layer == 0 else 1
        first = layer == 0 or c_in != block.bottleneck or stride > 1
        out.append((c_in, block.bottleneck, round8(block.bottleneck * block.expansion), stride, first))
        second = block.bottleneck != block.out_channels
        out.append((block.bottleneck, block.out_channels, round8(block.out_channels * block.expansion), 1, second))
        c_in = block.out_channels
    return out


class StemLayersHead(nn.Module):
    """A MobileNetV2-like net: `stem`, `layers`, `head`, global average pooling, `classifier` (set by subclasses);
    `feature_blocks()` = stem, every layer, head (AZ-NAS's feature maps)."""

    def feature_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.layers, self.head]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))


class MBV2Network(StemLayersHead):
    """The network of a genome; `feature_blocks()` = stem, every inverted residual, head (AZ-NAS's feature maps)."""

    def __init__(self, genome: MBV2Genome, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.genome = genome
        self.stem = conv_bn(in_channels, genome.stem_channels, 3, stride=2)
        layers, c_in = [], genome.stem_channels
        for block in genome.blocks:
            for c, c_out, hidden, stride, project in block_residuals(block, c_in):
                layers.append(InvertedResidual(c, c_out, hidden, block.kernel, stride, project))
            c_in = block.out_channels
        self.layers = nn.ModuleList(layers)
        self.head = conv_bn(c_in, genome.last_channels, 1)
        self.classifier = nn.Linear(genome.last_channels, num_classes)



def mbv2_flops(genome: MBV2Genome, resolution: int = 224, num_classes: int = 1000, in_channels: int = 3) -> float:
    """FLOPs as the official counter counts them (conv + BN + classifier, projections at (r_out / stride)^2)."""

    def conv(c_in: int, c_out: int, kernel: int, res: int, stride: int = 1, groups: int = 1) -> int:
        return c_in * c_out * kernel**2 * res**2 // stride**2 // groups

    res = resolution
    total = conv(in_channels, genome.stem_channels, 3, res, 2)
    res //= 2
    total += res**2 * genome.stem_channels
    c_in = genome.stem_channels
    for block in genome.blocks:
        for c, c_out, hidden, stride, project in block_residuals(block, c_in):
            total += conv(c, hidden, 1, res) + res**2 * hidden
            total += conv(hidden, hidden, block.kernel, res, stride, groups=hidden)
            res //= stride
            total += res**2 * hidden + conv(hidden, c_out, 1, res) + res**2 * c_out
            if project:
                total += c * c_out * (res / stride) ** 2 + (res / stride) ** 2 * c_out
        c_in = block.out_channels
    total += conv(c_in, genome.last_channels, 1, res) + res**2 * genome.last_channels
    return float(total + genome.last_channels * num_classes)


def width_choices(width: int) -> list[int]:
    """The official neighbours of a width: x {1/2.5 .. 2.5}, rounded to multiples of 8, distinct, descending."""
    return sorted({round8(width * f) for f in WIDTH_FACTORS}, reverse=True)


def _mutate_block(block: IDWBlock, rng: random.Random) -> IDWBlock:
    """Kernel, expansion, width, bottleneck width and depth drawn jointly (uniform over the official choices)."""
    depths = sorted({d for d in range(block.depth - 2, block.depth + 3) if d > 0}, reverse=True)
    return replace(
        block,
        kernel=rng.choice(KERNELS),
        expansion=rng.choice(EXPANSIONS),
        out_channels=rng.choice(width_choices(block.out_channels)),
        depth=rng.choice(depths),
        bottleneck=rng.choice(width_choices(block.bottleneck)),
    )


def split_long_blocks(blocks: tuple[IDWBlock, ...]) -> tuple[IDWBlock, ...]:
    """A block of SPLIT_AT or more layers becomes SPLIT_AT // 2 layers then the rest at stride 1 (official split)."""
    out: list[IDWBlock] = []
    for block in blocks:
        if block.depth >= SPLIT_AT:
            out += [replace(block, depth=SPLIT_AT // 2), replace(block, stride=1, depth=block.depth - SPLIT_AT // 2)]
        else:
            out.append(block)
    return tuple(out)


def mutate(genome: MBV2Genome, rng: random.Random, max_layers: int | None = None, n_changes: int = 1) -> MBV2Genome:
    """Replace `n_changes` randomly chosen parts (stem, a block or the head; a part drawn twice changes once).

    The layer cap is not enforced here: the search discards children over it, as the official search does.
    """
    del max_layers
    parts = len(genome.blocks) + 2  # 0 = stem, 1..n = blocks, n + 1 = head (never changes)
    chosen: set[int] = set()
    stem, blocks = genome.stem_channels, list(genome.blocks)
    for _ in range(n_changes):
        part = rng.randint(0, parts - 1)
        if part in chosen:
            continue
        chosen.add(part)
        if part == 0:
            stem = rng.choice(width_choices(stem))
        elif part <= len(blocks):
            blocks[part - 1] = _mutate_block(blocks[part - 1], rng)
    return replace(genome, stem_channels=stem, blocks=split_long_blocks(tuple(blocks)))
