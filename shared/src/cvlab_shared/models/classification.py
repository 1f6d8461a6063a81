"""Image-classification backbones with one interface, so losses and mixup methods can reach inside them.

Every model built here has
- `forward_feature_map(x)`: the last convolutional feature map (ResNet layer 4), where feature mixup happens;
- `forward_head(feature_map)`: pooling, flattening and the linear `classifier`;
- `forward_features(x)`: the pooled penultimate feature (N, D); `forward(x)`: the logits.

Backbones (`build_model(backbone, ...)`):
- `resnet50`, `resnet101`: torchvision ResNets (7x7 stride-2 stem and max-pool, for 224x224 inputs);
- `resnet50_cifar`, `resnet101_cifar`: 3x3 stride-1 stem, no max-pool, global pooling (32x32 inputs);
- `resnet50_tiny`, `resnet101_tiny`: the official Tiny-ImageNet variant (calibration.md 1.2): 3x3 stride-1 stem,
  no max-pool, 2x2 adaptive pooling, classifier on 4 x 2048 features (64x64 inputs);
- `small_cnn`: three 3x3 convolutions for 8x8 digits (no normalisation layer, so DDP equals one process).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models import resnet

from cvlab_shared.models.weights import load_pretrained

RESNETS = {"resnet50": resnet.resnet50, "resnet101": resnet.resnet101}
BACKBONES = ("small_cnn", *RESNETS, *(f"{n}_{v}" for n in RESNETS for v in ("cifar", "tiny")))


class ImageClassifier(nn.Module):
    """`head(pool(body(x)))` with the feature-map / feature / logit entry points described in the module doc."""

    def __init__(self, body: nn.Module, feature_channels: int, num_classes: int, pool_size: int = 1) -> None:
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.feature_dim = feature_channels * pool_size * pool_size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_feature_map(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, feature_map: Tensor) -> Tensor:
        return self.classifier(self.pool(feature_map).flatten(1))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_feature_map(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_feature_map(x))


class ResNetBody(nn.Module):
    """torchvision's ResNet up to layer 4 (parameter names kept, so torchvision state dicts load)."""

    def __init__(self, net: resnet.ResNet, small_input: bool, in_channels: int = 3) -> None:
        super().__init__()
        if small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def small_cnn_body(in_channels: int = 1, width: int = 32) -> nn.Sequential:
    """conv-ReLU-conv-ReLU-maxpool-conv-ReLU: 8x8 input -> (4 * width) x 4 x 4."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(inplace=True),
    )


def build_model(
    backbone: str, num_classes: int, pretrained: str | Path | None = None, in_channels: int = 3
) -> ImageClassifier:
    """A classifier named `backbone` (see module doc).

    `pretrained` names a weights file for the body (torchvision names such as `layer1.0.conv1.weight`, or ours
    with the `body.` prefix); the classifier stays freshly initialised, as in fine-tuning. Nothing is downloaded.
    """
    if backbone == "small_cnn":
        model = ImageClassifier(small_cnn_body(in_channels), 128, num_classes, pool_size=2)
    else:
        name, _, variant = backbone.partition("_")
        if name not in RESNETS or variant not in ("", "cifar", "tiny"):
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
        body = ResNetBody(RESNETS[name](weights=None), small_input=bool(variant), in_channels=in_channels)
        model = ImageClassifier(body, 2048, num_classes, pool_size=2 if variant == "tiny" else 1)
    if pretrained:
        load_pretrained(model.body, pretrained, prefix="body.")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

