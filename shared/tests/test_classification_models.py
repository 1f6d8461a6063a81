"""Every classification backbone: shapes and the feature-map / head split that mixup methods rely on."""

import pytest
import torch

from cvlab_shared.models.classification import BACKBONES, build_model

INPUTS = {"small_cnn": (1, 8), "resnet50": (3, 32), "resnet101": (3, 32)}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_interface(backbone):
    channels, size = INPUTS.get(backbone, (3, 16))
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=5, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        feature_map = model.forward_feature_map(x)
        logits = model(x)
        features = model.forward_features(x)
    assert logits.shape == (2, 5) and features.shape == (2, model.feature_dim)
    assert model.classifier.in_features == model.feature_dim
    torch.testing.assert_close(model.forward_head(feature_map), logits)
    torch.testing.assert_close(model.classifier(features), logits)
    if backbone.endswith("_tiny"):
        assert model.feature_dim == 4 * 2048  # official Tiny-ImageNet head: 2x2 pooling


def test_pretrained_body_loads_from_file(tmp_path):
    source = build_model("small_cnn", 3, in_channels=1)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    target = build_model("small_cnn", 3, pretrained=path, in_channels=1)
    torch.testing.assert_close(target.body[0].weight, source.body[0].weight)
    with pytest.raises(FileNotFoundError):
        build_model("small_cnn", 3, pretrained=tmp_path / "missing.pt", in_channels=1)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("vgg16", 3)
