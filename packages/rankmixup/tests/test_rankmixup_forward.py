"""mixup_forward: a second forward pass for the mixed copies (own BN statistics), images or layer-4 features."""

import pytest
import torch
from torch import nn

from rankmixup import mix
from rankmixup.forward import mixup_forward


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.classifier = nn.Linear(4, 3)

    def forward_features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.forward_features(x))


def test_image_mixup_uses_a_separate_batchnorm_pass():
    torch.manual_seed(0)
    model = TinyNet().train()
    x, y = torch.randn(6, 1, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    logits, mixed_logits, batch = mixup_forward(model, x, y, 3, num_mixup=2, mixup_alpha=1.0,
                                                generator=torch.Generator().manual_seed(0))
    assert logits.shape == (6, 3) and mixed_logits.shape == (12, 3)
    torch.testing.assert_close(mixed_logits, model(batch.inputs))  # alone: its own batch statistics
    together = model(torch.cat([x, batch.inputs]))[6:]
    assert not torch.allclose(together, mixed_logits, atol=1e-4)  # one joint pass would normalise differently


def test_feature_mixup_mixes_pooled_layer4_features():
    torch.manual_seed(0)
    model = TinyNet().train()
    x, y = torch.randn(6, 1, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    logits, mixed_logits, batch = mixup_forward(model, x, y, 3, num_mixup=3, layer_mix=4,
                                                generator=torch.Generator().manual_seed(1))
    features = model.forward_features(x)
    expected, soft = mix(features, y, 3, batch.lam, batch.perm)
    torch.testing.assert_close(mixed_logits, model.classifier(expected))
    torch.testing.assert_close(batch.soft_targets, soft)
    torch.testing.assert_close(logits, model(x))


def test_bad_layer_mix_raises():
    with pytest.raises(ValueError, match="layer_mix"):
        mixup_forward(TinyNet(), torch.zeros(2, 1, 5, 5), torch.zeros(2, dtype=torch.long), 3, layer_mix=2)
    with pytest.raises(TypeError, match="forward_features"):
        mixup_forward(nn.Linear(4, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), 3, layer_mix=4)
