import json
import math
import random

import pytest
import torch

from az_nas import aggregate, score_network
from az_nas.cli import main
from az_nas.proxies.az import capture_block_outputs
from az_nas.proxies.flops import count_flops
from az_nas.search.autoformer_search import AUTOFORMER_PROXIES, score_vit
from az_nas.spaces.autoformer import (
    HEAD_DIM,
    SPACES,
    ViTConfig,
    VisionTransformer,
    sample_in_window,
    vit_flops,
    vit_params,
)

SMALL_VIT = ViTConfig(48, (2.0, 4.0, 3.5), (1, 2, 1))


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("image_size, num_classes", [(224, 1000), (32, 10), (64, 7)])
def test_parameter_count_is_exact(image_size, num_classes):
    net = VisionTransformer(SMALL_VIT, image_size, num_classes)
    assert vit_params(SMALL_VIT, image_size, num_classes) == _numel(net)


def test_parameter_count_of_sampled_tiny_and_small_candidates():
    for name in ("tiny", "small"):
        config = sample_in_window(SPACES[name], 1, seed=3)[0]
        assert vit_params(config) == _numel(VisionTransformer(config))


def test_flops_are_the_layer_count_plus_the_attention_products():
    net = VisionTransformer(SMALL_VIT, image_size=64, num_classes=10)
    tokens = (64 // 16) ** 2 + 1
    attention = sum(2 * tokens**2 * HEAD_DIM * h for h in SMALL_VIT.num_heads)
    assert vit_flops(SMALL_VIT, 64, 10) == count_flops(net, (1, 3, 64, 64)) + attention


def test_space_choice_sets_follow_autoformer_table_1():
    tiny, small, base = SPACES["tiny"], SPACES["small"], SPACES["base"]
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads) == ((192, 216, 240), (12, 13, 14), (3, 4))
    assert tiny.mlp_ratio == (3.5, 4.0)
    assert (small.embed_dim, small.depth, small.num_heads) == ((320, 384, 448), (12, 13, 14), (5, 6, 7))
    assert (base.embed_dim, base.depth, base.num_heads) == ((528, 576, 624), (14, 15, 16), (9, 10))
    assert small.mlp_ratio == base.mlp_ratio == (3.0, 3.5, 4.0)


@pytest.mark.parametrize("name, window", [("tiny", (4e6, 6e6)), ("small", (21e6, 23e6)), ("base", (52e6, 54e6))])
def test_sampling_respects_the_window_and_is_seeded(name, window):
    space = SPACES[name]
    configs = sample_in_window(space, 30, seed=0)
    assert len(set(configs)) == 30
    for config in configs:
        assert space.contains(config)
        assert window[0] <= vit_params(config) <= window[1]
    assert sample_in_window(space, 30, seed=0) == configs
    assert sample_in_window(space, 30, seed=1) != configs
    # uniform draws before the window: every depth and embedding dimension of the space turns up
    rng = random.Random(0)
    draws = [space.sample(rng) for _ in range(300)]
    assert {d.depth for d in draws} == set(space.depth)
    assert {d.embed_dim for d in draws} == set(space.embed_dim)


def test_config_json_round_trip_and_bad_configs():
    assert ViTConfig.from_json(SMALL_VIT.to_json()) == SMALL_VIT
    with pytest.raises(ValueError, match="one entry per block"):
        ViTConfig(48, (4.0,), (1, 2))
    with pytest.raises(ValueError, match="multiple of 16"):
        VisionTransformer(SMALL_VIT, image_size=40)
    with pytest.raises(ValueError, match="found only"):
        sample_in_window(SPACES["tiny"], 5, seed=0, max_draws=1)


def test_features_are_the_residual_stream_after_attention_and_mlp():
    net = VisionTransformer(SMALL_VIT, image_size=32, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    blocks = net.feature_blocks()
    features = capture_block_outputs(net, blocks, lambda: net(x))
    assert len(features) == 2 * SMALL_VIT.depth
    assert all(f.shape == (2, 5, 48) for f in features)
    # the second feature of each block is the first plus the MLP branch on it
    block = net.blocks[0]
    patches = net.patch_embed(x).flatten(2).transpose(1, 2)
    after_attention = block[0](torch.cat([net.cls_token.expand(2, -1, -1), patches], 1) + net.pos_embed)
    assert torch.allclose(features[0], after_attention, atol=1e-6)
    assert torch.allclose(features[1], after_attention + block[1].body(block[1].norm(after_attention)), atol=1e-6)


def test_vit_scoring_is_finite_keeps_the_init_and_skips_progressivity():
    net = VisionTransformer(SMALL_VIT, image_size=32, num_classes=10)
    before = net.blocks[0][0].body.qkv.weight.clone()
    scores = score_network(net, input_shape=(4, 3, 32, 32), reinit=False, train=False, progressivity=False, seed=0)
    assert set(scores) == set(AUTOFORMER_PROXIES)
    assert all(math.isfinite(v) for v in scores.values())
    assert torch.equal(net.blocks[0][0].body.qkv.weight, before)
    torch.manual_seed(0)
    a = score_vit(SMALL_VIT, batch_size=4, resolution=32, num_classes=10)
    torch.manual_seed(0)
    b = score_vit(SMALL_VIT, batch_size=4, resolution=32, num_classes=10)
    assert a == b and a["params"] == vit_params(SMALL_VIT)


def test_a_wider_deeper_vit_ranks_above_a_degenerate_one():
    # more blocks add more (non-negative) entropy terms and a wider stream allows more: E and C must both favour the
    # big net, which then wins the 3-proxy log-rank aggregation whatever trainability says
    big = ViTConfig(64, (4.0,) * 4, (2,) * 4)
    tiny = ViTConfig(16, (1.0,), (1,))
    torch.manual_seed(0)
    scores = [score_vit(c, batch_size=8, resolution=64, num_classes=10) for c in (big, tiny)]
    assert all(math.isfinite(s[p]) for s in scores for p in AUTOFORMER_PROXIES)
    assert scores[0]["expressivity"] > scores[1]["expressivity"]
    assert scores[0]["complexity"] > scores[1]["complexity"]
    assert aggregate(scores, AUTOFORMER_PROXIES).argmax() == 0


def test_cli_search_in_the_tiny_space(tmp_path, capsys):
    out = tmp_path / "vit"
    main(["search", "--space", "autoformer-tiny", "--num-candidates", "3", "--batch-size", "2", "--resolution", "32",
          "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert payload["space"] == "autoformer-tiny" and payload["proxies"] == list(AUTOFORMER_PROXIES)
    assert len(payload["candidates"]) == 3
    for row in payload["candidates"]:
        assert 4e6 <= row["params"] <= 6e6 and "progressivity" not in row
        assert SPACES["tiny"].contains(ViTConfig.from_json(row["candidate"]))
    assert printed.strip().splitlines()[-1] == "chosen: " + payload["best"]["candidate"]
    assert (out / "results.csv").read_text().count("\n") == 4


def test_eval_mode_and_dropped_progressivity_in_both_numerics():
    model = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()),
    )
    kwargs = dict(input_shape=(4, 3, 8, 8), reinit=False, complexity=False, seed=0)
    in_eval = score_network(model, train=False, progressivity=False, numerics="both", **kwargs)
    assert set(in_eval) == {"expressivity", "expressivity_official", "trainability"}
    # BatchNorm with running statistics (eval) is not batch normalisation (train): the scores must differ
    assert in_eval["expressivity"] != score_network(model, **kwargs)["expressivity"]
