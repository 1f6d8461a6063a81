"""Spatial / temporal memories and the spread loss against the golden outputs of the official STMN code
(../shared/golden/reid_eval.json: stmn_spatial_memory, stmn_temporal_memory, stmn_memory_spread_loss), and the
paper-default semantics (per-position queries, per-key normalisation)."""

import pytest
import torch
import torch.nn.functional as F

from stmn import MemorySpreadLoss, SpatialMemory, TemporalMemory, memory_spread_loss
from cvlab_shared.reference import load_golden


@pytest.fixture(scope="module")
def entries():
    return load_golden("reid_eval")["entries"]


def _t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_spread_loss_on_the_project_page_attention_matrices(entries):
    out = entries["stmn_memory_spread_loss"]["outputs"]
    loss = MemorySpreadLoss(out["margin"])
    assert float(loss(_t(out["attention_collapsed"]))) == pytest.approx(out["loss_collapsed"], abs=1e-6)
    assert float(loss(_t(out["attention_spread"]))) == pytest.approx(out["loss_spread"], abs=1e-6)


def _spatial(entries, layout, key_norm, bn_weight):
    out = entries["stmn_spatial_memory"]["outputs"]
    inputs = out["inputs"]
    mem = SpatialMemory(8, 4, 0.3, layout=layout, key_norm=key_norm).train()
    with torch.no_grad():
        mem.key.copy_(_t(inputs["key"]))
        mem.val.copy_(_t(inputs["val"]))
        mem.bn.weight.fill_(bn_weight)
    return mem(_t(inputs["query"]), _t(inputs["feat"])), out


@pytest.mark.parametrize("bn_weight,name", [(0.0, "official_init"), (1.0, "bn_weight_1")])
def test_spatial_memory_official_options_reproduce_the_official_code(entries, bn_weight, name):
    got, out = _spatial(entries, "official", "slot", bn_weight)
    torch.testing.assert_close(got.features, _t(out[f"out_{name}"]), atol=1e-5, rtol=1e-5)
    assert float(got.loss.detach()) == pytest.approx(out[f"loss_{name}"], abs=1e-6)


def test_paper_semantics_differ_from_the_official_reshape_but_agree_at_init(entries):
    got, out = _spatial(entries, "position", "key", 1.0)
    assert (got.features - _t(out["out_bn_weight_1"])).abs().max() > 1e-2
    assert got.attention.shape == (2 * 2 * 3, 4)  # one row per spatial position
    init, _ = _spatial(entries, "position", "key", 0.0)
    torch.testing.assert_close(init.features, _t(out["out_official_init"]), atol=1e-5, rtol=1e-5)


def test_position_layout_reads_each_location_from_its_own_descriptor():
    torch.manual_seed(0)
    mem = SpatialMemory(4, 3)
    q = torch.randn(2, 4, 3, 2)
    att = mem.attention(q)
    keys = F.normalize(mem.key, dim=1)
    expected = F.softmax(F.normalize(q[1, :, 2, 1], dim=0) @ keys.t(), dim=0)
    torch.testing.assert_close(att[1 * 6 + 2 * 2 + 1], expected)


def test_temporal_memory_official_option_reproduces_the_official_code(entries):
    out = entries["stmn_temporal_memory"]["outputs"]
    inputs = out["inputs"]
    mem = TemporalMemory(8, 3, 0.3, seq_len=4, key_norm="slot")
    with torch.no_grad():
        mem.key.copy_(_t(inputs["key"]))
        mem.val.copy_(_t(inputs["val"]))
        mem.lstm.load_state_dict({k: _t(v) for k, v in inputs["lstm"].items()})
    got = mem(_t(inputs["query"]), _t(inputs["frame_feats"]))
    torch.testing.assert_close(got.features, _t(out["out"]), atol=1e-5, rtol=1e-5)
    assert float(got.loss.detach()) == pytest.approx(out["loss"], abs=1e-6)
    torch.testing.assert_close(got.weights.sum(1), torch.ones(2))
    paper = TemporalMemory(8, 3, 0.3, seq_len=4)
    paper.load_state_dict(mem.state_dict())
    assert (paper(_t(inputs["query"]), _t(inputs["frame_feats"])).features - _t(out["out"])).abs().max() > 1e-3


def test_spread_loss_gradient_pushes_a_collapsed_slot_apart():
    logits = torch.zeros(4, 3, requires_grad=True)
    memory_spread_loss(F.softmax(logits, dim=1)).backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0  # uniform attention: max == min everywhere
    logits = torch.tensor([[1.0, 0, 0], [0.5, 0, 0]], requires_grad=True)
    memory_spread_loss(F.softmax(logits, dim=1)).backward()
    assert logits.grad.abs().sum() > 0


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="layout"):
        SpatialMemory(4, layout="nchw")
    with pytest.raises(ValueError, match="key_norm"):
        TemporalMemory(4, key_norm="none")
