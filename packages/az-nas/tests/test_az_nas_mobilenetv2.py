"""The official MobileNetV2 (IDW) space: genome, network, FLOPs as the official counter, layer cap, mutations."""

import random

import pytest
import torch
from torch import nn

from az_nas.spaces.mobilenetv2 import (
    BUDGETS,
    INITIAL,
    IDWBlock,
    InvertedResidual,
    MBV2Genome,
    MBV2Network,
    mbv2_flops,
    mutate,
    width_choices,
)


def hook_flops(net: nn.Module, resolution: int, batchnorm: bool = True) -> float:
    """Independent count with hooks: conv MACs (no bias), one per BN output element, linear in*out; a projection
    shortcut at (output size / stride)^2 positions, as the official counter does."""
    total = 0.0
    scale: dict[nn.Module, float] = {}
    for module in net.modules():
        if isinstance(module, InvertedResidual) and isinstance(module.shortcut, nn.Sequential):
            for inner in module.shortcut:
                scale[inner] = 1 / module.stride**2

    def hook(module, _inputs, output):
        nonlocal total
        s = scale.get(module, 1.0)
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k * s
        elif isinstance(module, nn.BatchNorm2d) and batchnorm:
            total += output[0].numel() * s
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    counted = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return total


def test_initial_network_is_the_official_one():
    assert INITIAL.stem_channels == 8 and INITIAL.last_channels == 2048
    assert [(b.out_channels, b.bottleneck, b.depth, b.kernel, b.expansion) for b in INITIAL.blocks] == [
        (32, 8, 1, 3, 6), (48, 32, 1, 3, 6), (96, 48, 1, 3, 6), (128, 96, 1, 3, 6)]
    net = MBV2Network(INITIAL, num_classes=5)
    # two inverted residuals per stage, plus stem and head
    assert len(net.layers) == 8 and len(net.feature_blocks()) == 10
    assert INITIAL.num_layers == 6  # 4 block layers + stem + head
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.parametrize("genome", [
    INITIAL,
    MBV2Genome(16, (IDWBlock(24, 2, 40, 2, 5, 4), IDWBlock(24, 1, 24, 1, 7, 1), IDWBlock(64, 2, 16, 3, 3, 2)), 256),
])
def test_flops_count_batchnorm_and_match_an_independent_count(genome):
    for res in (32, 224):
        assert mbv2_flops(genome, res) == pytest.approx(hook_flops(MBV2Network(genome), res), rel=1e-12)
    # BatchNorm is part of the budget: the count without it is smaller by one per BN output element
    assert mbv2_flops(genome, 224) > hook_flops(MBV2Network(genome), 224, batchnorm=False)
    assert mbv2_flops(INITIAL) < BUDGETS["450M"][0]


def test_layer_cap_counts_stem_and_head_so_450m_allows_24_inverted_residuals():
    blocks = (IDWBlock(32, 2, 16, 3), IDWBlock(48, 2, 24, 3), IDWBlock(64, 2, 32, 3), IDWBlock(96, 2, 48, 3))
    twelve = MBV2Genome(8, blocks)
    assert twelve.num_layers == 14 == BUDGETS["450M"][1]
    assert len(MBV2Network(twelve).layers) == 24


def test_mutations_change_block_choices_jointly_touch_the_stem_never_the_head_and_split_long_blocks():
    rng = random.Random(0)
    joint = stem = 0
    for _ in range(400):
        child = mutate(INITIAL, rng, 14, 1)
        assert child.last_channels == INITIAL.last_channels
        stem += child.stem_channels != INITIAL.stem_channels
        for old, new in zip(INITIAL.blocks, child.blocks):
            changed = [old.kernel != new.kernel, old.expansion != new.expansion, old.out_channels != new.out_channels,
                       old.bottleneck != new.bottleneck, old.depth != new.depth]
            joint += sum(changed) >= 4
            assert new.out_channels in width_choices(old.out_channels) and abs(new.depth - old.depth) <= 2
    assert stem > 0 and joint > 0
    long = MBV2Genome(8, (IDWBlock(32, 2, 16, 5),))
    for _ in range(200):
        child = mutate(long, rng, 16, 1)
        assert all(b.depth < 6 for b in child.blocks)
        if len(child.blocks) == 2:
            assert child.blocks[0].depth == 3 and child.blocks[1].stride == 1
    assert width_choices(32) == [80, 64, 48, 40, 32, 24, 16]


def test_json_round_trip():
    genome = mutate(INITIAL, random.Random(3), 14, 2)
    assert MBV2Genome.from_json(genome.to_json()) == genome
    with pytest.raises(ValueError, match="mobilenetv2-stages"):
        MBV2Genome.from_json('{"stem_channels": 8, "stages": [], "last_channels": 2048}')
