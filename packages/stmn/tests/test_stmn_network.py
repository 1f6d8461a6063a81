"""The STMN network: branch structure, memories off at init, ablation switches, losses."""

import pytest
import torch

from stmn import STMN, soft_margin_triplet_loss, stmn_loss


def test_key_branches_drop_the_final_relu_and_the_spatial_memory_starts_as_identity():
    torch.manual_seed(0)
    net = STMN(5, backbone="tiny", width=4, seq_len=3).train()
    x = torch.randn(2, 3, 3, 32, 16)
    shared = net.trunk(x.flatten(0, 1))
    assert (net.layer4_val(shared) >= 0).all() and (net.layer4_key_s(shared) < 0).any()
    out = net(x)
    torch.testing.assert_close(out.frame_features.flatten(0, 1), net.layer4_val(shared).mean(dim=(2, 3)))
    assert out.logits_s.shape == (2, 5) and out.embedding.shape == (2, net.feature_dim)
    torch.testing.assert_close(out.frame_weights.sum(1), torch.ones(2))


def test_resnet_key_branch_differs_from_the_value_branch_only_by_the_final_relu():
    torch.manual_seed(0)
    net = STMN(0, backbone="resnet18", seq_len=2).eval()
    stage_in = net.trunk(torch.randn(2, 3, 64, 32))
    val = net.layer4_val(stage_in)
    key = net.layer4_key_s(stage_in)
    torch.testing.assert_close(val, key.relu())
    assert (key < 0).any()


def test_ablation_switches_give_the_frame_average_baseline():
    torch.manual_seed(0)
    net = STMN(3, backbone="tiny", width=4, seq_len=2, spatial_memory=False, temporal_memory=False)
    assert net.smem is None and net.tmem is None and net.layer4_key_s is None
    out = net(torch.randn(2, 2, 3, 32, 16))
    torch.testing.assert_close(out.sequence_features, out.frame_features.mean(1))
    assert float(out.spread_s) == 0.0 and float(out.spread_t) == 0.0


def test_soft_margin_triplet_and_the_official_sum():
    feats = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchors: d_ap = 1, 1, 2, 2; d_an = 3, sqrt(10), 3, sqrt(10)
    expected = torch.nn.functional.softplus(torch.tensor([1 - 3, 1 - 10**0.5, 2 - 3, 2 - 10**0.5])).mean()
    assert float(soft_margin_triplet_loss(feats, labels)) == pytest.approx(float(expected), abs=1e-5)
    logits = torch.zeros(4, 2)
    parts = stmn_loss(logits, logits, feats, feats, torch.tensor(0.1), torch.tensor(0.2), labels)
    assert float(parts["loss"]) == pytest.approx(2 * float(torch.log(torch.tensor(2.0))) + 2 * float(expected) + 0.3)
