"""DeepLab-v2: output stride 8, four ASPP branches whose outputs sum to the logits, frozen BN, parameter groups."""

import torch

from cvlab_shared.models.deeplabv2 import ASPP_RATES, DeepLabV2


def test_resnet101_output_stride_8_and_summed_branches():
    torch.manual_seed(0)
    model = DeepLabV2(19, backbone="resnet101").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.feature.shape == (1, 2048, 8, 8)
    assert out.logits.shape == (1, 19, 8, 8) and out.branches.shape == (1, 4 * 19, 8, 8)
    torch.testing.assert_close(out.branches.view(1, 4, 19, 8, 8).sum(1), out.logits)
    assert [c.dilation[0] for c in model.classifier.branches] == list(ASPP_RATES)
    assert [c.padding[0] for c in model.classifier.branches] == list(ASPP_RATES)
    assert model.backbone.layer3[1].conv2.dilation == (2, 2) and model.backbone.layer4[1].conv2.dilation == (4, 4)


def test_small_backbone_frozen_bn_and_groups():
    model = DeepLabV2(5, backbone="resnet18", freeze_bn=True).train()
    assert not model.backbone.bn1.training and not model.backbone.bn1.weight.requires_grad
    before = model.backbone.bn1.running_mean.clone()
    out = model(torch.randn(2, 3, 32, 48))
    assert out.feature.shape == (2, 512, 4, 6)
    torch.testing.assert_close(model.backbone.bn1.running_mean, before)
    fresh = DeepLabV2(5, backbone="resnet18", freeze_bn=True)  # frozen before any train() call (Lightning's fit)
    fresh(torch.randn(2, 3, 32, 48))
    assert not fresh.backbone.bn1.training and not fresh.backbone.bn1.running_mean.any()
    groups = model.parameter_groups(0.01)
    assert groups[1]["lr"] == 0.1 and len(groups[1]["params"]) == 8
    assert all(p.requires_grad for p in groups[0]["params"])
