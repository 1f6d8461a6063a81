"""Re-ID backbones: shapes, last stride, GeM, BNNeck, pretrained loading by torchvision names."""

import pytest
import torch
from torchvision.models import resnet50

from cvlab_shared.models.reid import AveragePooling, GeneralizedMeanPooling, ReidBackbone, build_model


@pytest.mark.parametrize("backbone,dim", [("tiny", 128), ("resnet18", 512), ("resnet50", 2048)])
def test_output_shapes_and_normalised_embedding(backbone, dim):
    model = build_model(backbone, num_classes=7).eval()
    out = model(torch.randn(2, 3, 64, 32))
    assert out.features.shape == out.bn_features.shape == (2, dim)
    assert out.logits.shape == (2, 7)
    emb = model.embed(torch.randn(3, 3, 64, 32))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("backbone", ["tiny", "resnet18", "resnet50"])
def test_last_stride_one_doubles_the_final_map(backbone):
    x = torch.randn(1, 3, 128, 64)
    one = ReidBackbone(backbone, last_stride=1).trunk(x)
    two = ReidBackbone(backbone, last_stride=2).trunk(x)
    assert one.shape[2:] == (two.shape[2] * 2, two.shape[3] * 2)


def test_gem_with_p_one_is_average_pooling_and_p_large_tends_to_max():
    x = torch.rand(2, 5, 4, 3) + 0.1
    torch.testing.assert_close(GeneralizedMeanPooling(1.0)(x), AveragePooling()(x))
    big = GeneralizedMeanPooling(60.0)(x)
    torch.testing.assert_close(big, x.amax(dim=(2, 3)), atol=0.05, rtol=0.05)


def test_bnneck_bias_is_frozen_and_no_classifier_by_default():
    model = ReidBackbone("tiny")
    assert not model.bnneck.bias.requires_grad
    assert model.classifier is None and model(torch.randn(2, 3, 32, 16)).logits is None


def test_torchvision_state_dict_loads_into_the_trunk(tmp_path):
    reference = resnet50(weights=None)
    torch.nn.init.constant_(reference.layer4[2].conv3.weight, 0.25)
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    model = ReidBackbone("resnet50", pretrained=str(path))
    torch.testing.assert_close(model.trunk[7][2].conv3.weight, reference.layer4[2].conv3.weight)
    torch.testing.assert_close(model.trunk[0].weight, reference.conv1.weight)


def test_bad_names_raise():
    with pytest.raises(ValueError, match="backbone"):
        ReidBackbone("vgg")
    with pytest.raises(ValueError, match="pooling"):
        ReidBackbone("tiny", pooling="max")
