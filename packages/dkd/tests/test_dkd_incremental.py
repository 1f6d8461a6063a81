"""Incremental-step mechanics: per-group learning rates, frozen BN, teacher/initialisation from the previous step."""

import pytest
import torch
from torch import nn

from cvlab_shared.models.deeplab import DeepLabV3
from dkd.incremental import freeze_bn_and_dropout, parameter_groups, predict


@pytest.fixture(scope="module")
def model():
    return DeepLabV3([1, 15, 5], backbone="resnet18")


def test_base_step_groups(model):
    groups = {g["name"]: g for g in parameter_groups(model, 0, lr=1e-3, weight_decay=1e-4)}
    assert set(groups) == {"backbone", "aspp", "classifier"}
    assert groups["backbone"]["lr"] == 1e-3 and groups["aspp"]["lr"] == pytest.approx(1e-2)
    assert groups["classifier"]["lr"] == pytest.approx(1e-2)
    assert all(g["weight_decay"] == 1e-4 for g in groups.values())
    total = sum(p.numel() for g in groups.values() for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_incremental_step_groups_and_frozen_bn():
    model = DeepLabV3([1, 15, 5], backbone="resnet18")
    freeze_bn_and_dropout(model)
    groups = {g["name"]: g for g in parameter_groups(model, 1, lr=1e-4, weight_decay=1e-4)}
    assert [groups[n]["weight_decay"] for n in ("backbone", "aspp", "old_classifier")] == [0.0, 0.0, 0.0]
    assert groups["new_classifier"]["weight_decay"] == 1e-4
    assert groups["new_classifier"]["lr"] == pytest.approx(1e-3) and groups["backbone"]["lr"] == 1e-4
    new = {id(p) for p in groups["new_classifier"]["params"]}
    assert new == {id(p) for p in model.classifier.heads[-1].parameters()}
    old = {id(p) for p in groups["old_classifier"]["params"]}
    assert {id(p) for p in model.classifier.heads[0].parameters()} <= old  # auxiliary classifier is "old"
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert not bn_params & {id(p) for g in groups.values() for p in g["params"]}
    model.train()
    freeze_bn_and_dropout(model)
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.backbone.bn1.running_mean, before)
    assert not model.aspp.project[3].training


def test_predict_background_when_nothing_is_confident():
    logits = torch.tensor([[5.0, -1.0, -2.0], [5.0, 0.3, 2.0], [-5.0, -0.1, -3.0]]).T.reshape(1, 3, 1, 3)
    assert predict(logits).tolist() == [[[0, 2, 0]]]
