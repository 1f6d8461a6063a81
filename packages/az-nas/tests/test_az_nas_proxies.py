import math

import numpy as np
import pytest
import torch
from torch import nn

from az_nas import aggregate, score_network
from az_nas.proxies.az import spectral_entropy
from az_nas.proxies.baselines import BASELINES, score_proxies
from az_nas.spaces.nb201 import NB201Network

SMALL = (8, 3, 16, 16)


def test_entropy_of_isotropic_and_rank_one_features():
    torch.manual_seed(0)
    iso = torch.randn(20000, 8)
    assert float(spectral_entropy(iso)) == pytest.approx(math.log(8), abs=1e-2)
    rank_one = torch.randn(1000, 1) * torch.ones(1, 8)
    assert float(spectral_entropy(rank_one)) == pytest.approx(0.0, abs=1e-6)
    assert float(spectral_entropy(torch.zeros(100, 8))) == 0.0  # stable numerics: zero map -> 0


def test_aggregation_is_log_of_normalised_ranks():
    scores = {"a": [1.0, 3.0, 2.0], "b": [5.0, 4.0, -math.inf]}
    got = aggregate(scores, proxies=("a", "b"))
    assert got == pytest.approx(np.log([1 / 3, 1.0, 2 / 3]) + np.log([1.0, 2 / 3, 1 / 3]))
    assert aggregate(scores, proxies=("a", "b"), mode="linear") == pytest.approx([4 / 3, 5 / 3, 1.0])
    with pytest.raises(KeyError):
        aggregate(scores)


def test_score_a_user_sequential_model_with_one_call():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
    )
    before = model[0][0].weight.clone()
    scores = score_network(model, input_shape=SMALL)
    assert set(scores) == {"expressivity", "progressivity", "trainability", "complexity"}
    assert all(math.isfinite(v) for v in scores.values())
    assert torch.equal(model[0][0].weight, before)  # a copy is scored by default
    assert scores["complexity"] == 3 * 8 * 9 * 256 + 8 * 256 + 8 * 8 * 9 * 256 + 8 * 256 + 8 * 16 * 9 * 64 + 16 * 64


def test_same_seed_same_scores_and_bad_input():
    net = NB201Network("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")
    a = score_network(net, input_shape=SMALL, seed=3)
    b = score_network(net, input_shape=SMALL, seed=3)
    assert a == b
    with pytest.raises(ValueError, match="blocks"):
        score_network(nn.Linear(3, 3), input_shape=(4, 3))
    with pytest.raises(ValueError, match="numerics"):
        score_network(net, numerics="fp16")


def test_baselines_in_one_call():
    torch.manual_seed(0)
    net = NB201Network("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
                       cells_per_stage=1)
    scores = score_proxies(net, ("az", *BASELINES), input_shape=SMALL)
    assert {"expressivity", "naswot", "synflow", "grad_norm", "snip", "zen", "flops", "params"} <= set(scores)
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["flops"] == scores["complexity"]
    with pytest.raises(ValueError, match="unknown proxies"):
        score_proxies(net, ["jacov"])
