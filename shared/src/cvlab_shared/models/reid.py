"""Re-ID backbones: ResNet-50 with last stride 1, GeM or average pooling and a BNNeck; a tiny CNN for CPU runs.

The recipe is the "strong baseline" of Luo et al. (BoT, CVPRW'19: last stride 1, BNNeck) with the generalised-mean
pooling of Radenovic et al. (TPAMI'18, GeM, p=3) that Cluster-Contrast and SpCL use by default. No weights are
downloaded: `pretrained` names a file loaded with `cvlab_shared.models.weights.load_pretrained`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50

from cvlab_shared.models.weights import load_pretrained

BACKBONES = ("resnet50", "resnet18", "tiny")
POOLINGS = ("gem", "avg")


class GeneralizedMeanPooling(nn.Module):
    """GeM: (mean_hw x^p)^(1/p) over the spatial map (Radenovic et al., eq. 2); p=1 is average pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class AveragePooling(nn.Module):
    """Global average pooling to an (N, C) feature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class ReidOutput(NamedTuple):
    """`features`: pooled (before BNNeck, the triplet/metric feature); `bn_features`: after BNNeck; `logits`."""

    features: torch.Tensor
    bn_features: torch.Tensor
    logits: torch.Tensor | None


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def tiny_cnn(width: int = 16, last_stride: int = 1) -> tuple[nn.Module, int]:
    """Four stages of two 3x3 conv-BN-ReLU, channels width*(1, 2, 4, 8), strides 2, 2, 2, last_stride."""
    layers: list[nn.Module] = []
    cin = 3
    for i, stride in enumerate((2, 2, 2, last_stride)):
        cout = width * 2**i
        layers += [_conv_bn_relu(cin, cout, stride), _conv_bn_relu(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers), cin


def _torchvision_trunk(name: str, last_stride: int) -> tuple[nn.Module, int]:
    net = resnet50(weights=None) if name == "resnet50" else resnet18(weights=None)
    block = net.layer4[0]
    # BoT "last stride 1": the first block of layer4 keeps the resolution of layer3.
    conv = block.conv2 if name == "resnet50" else block.conv1
    conv.stride = (last_stride, last_stride)
    if block.downsample is not None:
        block.downsample[0].stride = (last_stride, last_stride)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return trunk, net.fc.in_features


class ReidBackbone(nn.Module):
    """CNN trunk + pooling + BNNeck (BatchNorm1d with a frozen zero bias) + optional bias-free linear classifier.

    Args:
        backbone: "resnet50" (torchvision layout, so ImageNet state dicts load by name), "resnet18", or "tiny".
        last_stride: stride of the last stage (1 doubles the final map, as in BoT).
        pooling: "gem" (p=3) or "avg".
        num_classes: classifier outputs; 0 for no classifier.
        width: base width of the "tiny" CNN (ignored by the ResNets).
        pretrained: optional path of a state dict for the trunk (torchvision ResNet names, e.g. ImageNet weights).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        last_stride: int = 1,
        pooling: str = "gem",
        num_classes: int = 0,
        width: int = 16,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if backbone == "tiny":
            self.trunk, self.feature_dim = tiny_cnn(width, last_stride)
        else:
            self.trunk, self.feature_dim = _torchvision_trunk(backbone, last_stride)
            if pretrained:
                names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
                load_pretrained(_NamedTrunk(self.trunk, names), pretrained)
        self.pool = GeneralizedMeanPooling(3.0) if pooling == "gem" else AveragePooling()
        self.bnneck = nn.BatchNorm1d(self.feature_dim)
        self.bnneck.bias.requires_grad_(False)
        nn.init.constant_(self.bnneck.weight, 1.0)
        nn.init.constant_(self.bnneck.bias, 0.0)
        self.classifier: nn.Linear | None = None
        if num_classes > 0:
            self.classifier = nn.Linear(self.feature_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the BNNeck, (N, feature_dim)."""
        return self.pool(self.trunk(x))

    def forward(self, x: torch.Tensor) -> ReidOutput:
        features = self.forward_features(x)
        bn = self.bnneck(features)
        logits = self.classifier(bn) if self.classifier is not None else None
        return ReidOutput(features, bn, logits)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised BNNeck features, the retrieval descriptor at test time."""
        return F.normalize(self(x).bn_features, dim=1)


class _NamedTrunk(nn.Module):
    """Views a Sequential trunk under torchvision's attribute names so ImageNet state dicts load by key."""

    def __init__(self, trunk: nn.Sequential, names: list[str]) -> None:
        super().__init__()
        for name, module in zip(names, trunk):
            self.add_module(name, module)


def build_model(
    backbone: str = "resnet50",
    num_classes: int = 0,
    last_stride: int = 1,
    pooling: str = "gem",
    width: int = 16,
    pretrained: str | None = None,
) -> ReidBackbone:
    """A re-ID network by name (see `ReidBackbone`)."""
    return ReidBackbone(backbone, last_stride, pooling, num_classes, width, pretrained)
