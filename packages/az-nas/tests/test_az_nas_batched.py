"""The stacked (batched) NB201 scorer gives each cell the same proxies as scoring it alone."""

import math

import pytest
import torch

from az_nas.proxies import az
from az_nas.proxies.az import kaiming_fanin_init, score_network
from az_nas.search.batched import score_nb201_batch
from az_nas.spaces.nb201 import NB201Network
from az_nas.spaces.nb201_stacked import StackedNB201

ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",  # identity cell
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]


@pytest.fixture
def ones_probes(monkeypatch):
    """Deterministic probes so single and stacked trainability can be compared exactly."""
    monkeypatch.setattr(az, "rademacher_like", lambda t: torch.ones_like(t))


def test_stacked_matches_single_networks(ones_probes):
    torch.manual_seed(0)
    nets = [kaiming_fanin_init(NB201Network(a, cells_per_stage=1)).train() for a in ARCHS]
    stacked = StackedNB201(ARCHS, cells_per_stage=1).load_from_networks(nets)
    x = torch.randn(8, 3, 16, 16)
    batch = score_nb201_batch(ARCHS, inputs=x, network=stacked, reinit=False, numerics="both", input_shape=x.shape)
    for net, got in zip(nets, batch):
        want = score_network(net, inputs=x, reinit=False, numerics="both", input_shape=x.shape)
        want["complexity"] = float(want["complexity"])
        for key, value in want.items():
            if math.isinf(value):
                assert got[key] == value, key
            else:
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
    assert math.isinf(batch[2]["trainability"]) and batch[2]["progressivity"] == 0.0


def test_stacked_scores_are_finite_for_ordinary_cells():
    torch.manual_seed(1)
    records = score_nb201_batch(ARCHS[:2], input_shape=(8, 3, 16, 16))
    assert len(records) == 2
    for record in records:
        assert set(record) == {"expressivity", "progressivity", "trainability", "complexity"}
        assert all(math.isfinite(v) for v in record.values())
