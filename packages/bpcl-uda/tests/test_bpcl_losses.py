"""Parity of the release's loss options with the official code (golden `bpcl.*`), and the paper-default pieces
(contrast, prototype momentum, calibration, label transfer, hybrid labels) against hand-computed small cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from bpcl_uda import PixelPrototypeContrast, PrototypeMemory, entropy_map, hybrid_pseudo_labels, transfer_labels
from bpcl_uda.losses import class_prototypes, direction_loss
from cvlab_shared.reference import load_golden

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def golden():
    return {e["name"]: e for e in load_golden("segmentation")["entries"] if e["name"].startswith("bpcl.")}


def t(entry, key, where="inputs"):
    value = entry[where][key]
    return torch.tensor(value["values"], dtype=getattr(torch, value["dtype"]))


def test_release_metric_loss_matches_official(golden):
    e = golden["bpcl.metric_loss_bidirectional"]
    args = t(e, "feature_s"), t(e, "label_s"), t(e, "feature_t"), t(e, "label_t")
    out = e["outputs"]
    total, parts = PixelPrototypeContrast(19, weight_t2s=0.2, weight_s2t=0.2, release=True)(*args)
    assert parts["t2s"].item() == pytest.approx(out["L_t2s (lamb_metric1=1, lamb_metric2=0)"], rel=1e-5)
    assert parts["s2t"].item() == pytest.approx(out["L_s2t (lamb_metric1=0, lamb_metric2=1)"], rel=1e-5)
    assert total.item() == pytest.approx(out["loss_with_damnet_config_upsize (0.2, 0.2)"], rel=1e-5)


def test_release_entropy_matches_official(golden):
    e = golden["bpcl.entropy_loss"]
    got = entropy_map(t(e, "pred"), release=True)
    torch.testing.assert_close(got, t(e, "entropy_map", "outputs"), **TOL)
    assert got.mean().item() == pytest.approx(e["outputs"]["mean"], rel=1e-5)


def test_paper_entropy_is_the_shannon_entropy():
    logits = torch.tensor([[[[0.0]], [[0.0]]], [[[math.log(3.0)]], [[0.0]]]])  # p = (1/2, 1/2) and (3/4, 1/4)
    h = entropy_map(logits).flatten()
    assert h[0].item() == pytest.approx(math.log(2))
    assert h[1].item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_prototypes_are_masked_means():
    feature = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[0.0, 2.0], [0.0, 2.0]]]])  # [1, 2, 2, 2]
    label = torch.tensor([[[0, 0], [2, 255]]])
    proto, present = class_prototypes(feature, label, 3)
    torch.testing.assert_close(proto, torch.tensor([[2.0, 1.0], [0.0, 0.0], [5.0, 0.0]]))
    assert present.tolist() == [True, False, True]


def test_direction_loss_by_hand():
    # two prototypes along the axes; one pixel at 45 degrees labelled 0, one along axis 1 labelled 1
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feature = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]]])  # pixels (1, 1) and (0, 1)
    label = torch.tensor([[[0, 1]]])
    c = 1 / math.sqrt(2)
    l0 = -math.log(math.exp(c / 0.1) / (math.exp(c / 0.1) + math.exp(c / 0.1)))
    l1 = -math.log(math.exp(10) / (math.exp(10) + 1))
    got = direction_loss(feature, label, protos, torch.ones(2), 0.1)
    assert got.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # class 1 weighted out: only pixel 0 counts; prototype 1 unavailable: pixel 0 has a single candidate
    assert direction_loss(feature, label, protos, torch.tensor([1.0, 0.0]), 0.1).item() == pytest.approx(l0, rel=1e-5)
    masked = direction_loss(feature, label, protos, torch.tensor([1.0, 0.0]), 0.1, torch.tensor([True, False]))
    assert masked.item() == pytest.approx(0.0, abs=1e-6)


def test_paper_contrast_weights_classes_on_both_sides():
    torch.manual_seed(0)
    fs, ft = torch.randn(1, 4, 2, 2, requires_grad=True), torch.randn(1, 4, 2, 2, requires_grad=True)
    ls = torch.tensor([[[0, 1], [1, 2]]])
    lt = torch.tensor([[[0, 0], [2, 255]]])
    protos = torch.randn(3, 4)
    contrast = PixelPrototypeContrast(3, weight_t2s=1.0, weight_s2t=0.0)
    total, parts = contrast(fs, ls, ft, lt, protos, protos)
    expected = direction_loss(ft, lt, protos, torch.tensor([1.0, 0.0, 1.0]), 0.1)  # class 1 only in the source
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert ft.grad.abs().sum() > 0 and (fs.grad is None or fs.grad.abs().sum() == 0)
    with pytest.raises(ValueError, match="memory"):
        contrast(fs, ls, ft, lt)


def test_memory_momentum_first_copy_then_blend():
    memory = PrototypeMemory(3, 2, momentum=0.9)
    feature = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # pixels (1, 2) and (3, 2)
    present = memory.update("source", feature, torch.tensor([[[0, 0]]]))
    assert present.tolist() == [True, False, False]
    torch.testing.assert_close(memory.source[0], torch.tensor([2.0, 2.0]))
    memory.update("source", feature, torch.tensor([[[0, 2]]]))
    torch.testing.assert_close(memory.source[0], torch.tensor([0.9 * 2 + 0.1 * 1, 2.0]))
    torch.testing.assert_close(memory.source[2], torch.tensor([3.0, 2.0]))  # first sighting: copied
    assert memory.seen_source.tolist() == [True, False, True] and not memory.seen_target.any()
    torch.testing.assert_close(memory.source[1], torch.zeros(2))


def test_calibration_moves_source_prototypes_towards_target_gradually():
    memory = PrototypeMemory(2, 2, momentum=0.0, calibration_momentum=0.5)
    memory.update("source", torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]), torch.tensor([[[0, 1]]]))
    memory.update("target", torch.tensor([[[[2.0]], [[1.0]]]]), torch.tensor([[[0]]]))
    memory.update_calibration()
    torch.testing.assert_close(memory.bias, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))  # first: the gap itself
    torch.testing.assert_close(memory.calibrated_source(0.5), torch.tensor([[1.5, 0.5], [0.0, 1.0]]))
    memory.update("target", torch.tensor([[[[4.0]], [[1.0]]]]), torch.tensor([[[0]]]))
    memory.update_calibration()
    torch.testing.assert_close(memory.bias[0], torch.tensor([0.5 * 1 + 0.5 * 3, 1.0]))
    assert memory.seen_bias.tolist() == [True, False]


def test_label_transfer_and_hybrid_by_hand():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    feature = torch.tensor([[[[1.0, 0.1, 1.0]], [[0.0, 1.0, 1.0]]]])  # near 0, near 1, halfway 0/1
    available = torch.tensor([True, True, False])
    label = transfer_labels(feature, protos, available, threshold=0.8)
    assert label.tolist() == [[[0, 1, 255]]]
    p = F.softmax(torch.tensor([1.0, 0.0]) / 0.1, 0)[0].item()  # pixel 0's confidence
    assert transfer_labels(feature, protos, available, threshold=p + 1e-4).tolist()[0][0][0] == 255
    up = transfer_labels(feature, protos, available, size=(2, 6))
    assert up.shape == (1, 2, 6) and up[0, 1].tolist() == [0, 0, 1, 1, 255, 255]
    static = torch.tensor([0, 255, 1, 2, 255])
    dynamic = torch.tensor([0, 3, 255, 1, 255])
    assert hybrid_pseudo_labels(static, dynamic).tolist() == [0, 3, 1, 255, 255]
