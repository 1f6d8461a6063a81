"""DeepLabV3 with an incremental classifier: shapes, output stride, classifier rows, detached groups, weights file."""

import pytest
import torch
from torchvision.models import resnet18

from cvlab_shared.models.deeplab import DeepLabV3, IncrementalClassifier, build_resnet


@pytest.mark.parametrize(
    ("name", "output_stride"), [("resnet18", 8), ("resnet18", 16), ("resnet18", 32), ("resnet101", 16), ("resnet50", 8)]
)
def test_backbone_output_stride(name, output_stride):
    _, width = build_resnet(name, output_stride)
    model = DeepLabV3([1, 3], backbone=name, output_stride=output_stride).eval()
    with torch.no_grad():
        feature = model.forward_backbone(torch.randn(1, 3, 64, 64))
    assert feature.shape == (1, width, 64 // output_stride, 64 // output_stride)
    assert width == (512 if name == "resnet18" else 2048)


def test_forward_returns_upsampled_logits_and_nonnegative_feature():
    torch.manual_seed(0)
    model = DeepLabV3([1, 15, 1], backbone="resnet18").eval()
    logits, feature = model(torch.randn(2, 3, 48, 64))
    assert logits.shape == (2, 17, 48, 64)
    assert feature.shape == (2, 256, 3, 4)
    assert feature.min() >= 0
    assert model.num_classes == 17


def test_classifier_rows_reproduce_logits():
    torch.manual_seed(0)
    head = IncrementalClassifier(8, [1, 3, 2])
    feature = torch.randn(2, 8, 4, 4)
    expected = torch.einsum("nchw,kc->nkhw", feature, head.weight()) + head.bias()[None, :, None, None]
    torch.testing.assert_close(head(feature), expected)
    assert head.group_slice(1) == slice(1, 4) and head.group_slice(2) == slice(4, 6)
    assert head.classes_per_step == [1, 3, 2]


def test_detached_group_gives_no_gradient_to_feature():
    torch.manual_seed(0)
    head = IncrementalClassifier(8, [1, 2], detach_groups=[0])
    feature = torch.randn(1, 8, 2, 2, requires_grad=True)
    head(feature)[:, 0].sum().backward()
    assert feature.grad is None or feature.grad.abs().sum() == 0
    assert head.heads[0].weight.grad.abs().sum() > 0
    head(feature)[:, 1].sum().backward()
    assert feature.grad.abs().sum() > 0


def test_pretrained_backbone_loads_from_named_file(tmp_path):
    torch.manual_seed(1)
    source = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="skipped"):  # the ImageNet fc layer has no counterpart
        model = DeepLabV3([1, 2], backbone="resnet18", pretrained=str(path))
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    with pytest.raises(FileNotFoundError):
        DeepLabV3([1, 2], backbone="resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_backbone_bn_momentum_and_bad_arguments():
    model = DeepLabV3([2], backbone="resnet18", backbone_bn_momentum=0.01)
    assert model.backbone.bn1.momentum == 0.01
    assert model.last_conv[1].momentum == 0.1
    with pytest.raises(ValueError, match="backbone"):
        DeepLabV3([2], backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3([2], output_stride=4)
    with pytest.raises(ValueError, match="positive"):
        IncrementalClassifier(8, [])


def test_aspp_and_last_conv_start_kaiming_normal_as_the_official_model():
    torch.manual_seed(0)
    model = DeepLabV3([1, 3], backbone="resnet18", feature_channels=128)
    convs = [m for part in (model.aspp, model.last_conv) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7  # ASPP: 1x1, three atrous 3x3, image pooling 1x1, projection; then the last 3x3 conv
    for conv in convs:
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)  # default init: 0.41x that
        assert abs(conv.weight.mean().item()) < 0.1 * (2 / fan_in) ** 0.5
