import random

import pytest
import torch

from az_nas.proxies.flops import count_flops
from az_nas.spaces.mobilenetv2_stages import BUDGETS, INITIAL, MBV2Genome, MBV2Network, mutate
from az_nas.spaces.nb201 import NB201Network, all_archs, format_arch, nb201_flops, parse_arch

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def test_arch_string_round_trip_and_enumeration():
    ops = parse_arch(BEST)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
    assert format_arch(ops) == BEST
    archs = [format_arch(a) for a in all_archs()]
    assert len(archs) == len(set(archs)) == 15625


@pytest.mark.parametrize("bad", ["|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|none~0|+|none~0|",
                                 "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_bad_arch_strings_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_arch(bad)


def test_macro_network_shapes_and_blocks():
    net = NB201Network(BEST)
    assert len(net.feature_blocks()) == 18
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)


@pytest.mark.parametrize("arch", [BEST, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"])
def test_closed_form_flops_match_hook_counter(arch):
    # the golden values: 153.27297 M for the best cell, 15.64737 M for NATS index 0 (NAS-Bench-201 API)
    assert nb201_flops(arch) == count_flops(NB201Network(arch))
    assert nb201_flops(arch, resolution=16, num_classes=120) == count_flops(NB201Network(arch, num_classes=120), (1, 3, 16, 16))


def test_mobilenetv2_stages_space_mutation_respects_the_layer_cap_and_round_trips():
    rng = random.Random(0)
    genome = INITIAL
    for _ in range(30):
        genome = mutate(genome, rng, max_layers=14, n_changes=2)
        assert 1 <= genome.num_layers <= 14
    assert MBV2Genome.from_json(genome.to_json()) == genome
    net = MBV2Network(genome, num_classes=7)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert len(net.feature_blocks()) == genome.num_layers + 2
    assert count_flops(MBV2Network(INITIAL), (1, 3, 224, 224)) < BUDGETS["450M"][0]
