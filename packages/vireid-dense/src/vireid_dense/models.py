"""The two-stream network of LbA / AGW: modality-specific stems, shared stages, GeM, BNNeck, bias-free classifier.

ResNet-50 (paper): visible and infrared copies of (conv1, bn1, relu, maxpool), shared layer1-layer4 with last
stride 1, so a 288x144 input gives 18x9 maps at layer3 (1024 channels) and layer4 (2048). The core's tiny CNN
(CPU runs): its first stage is the stem, its third stage output plays layer3 and its fourth layer4.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cvlab_shared.models.reid import ReidBackbone

MODALITIES = ("visible", "infrared")


class HeadOutput(NamedTuple):
    """GeM feature (the triplet feature), BNNeck feature and logits."""

    features: torch.Tensor
    bn_features: torch.Tensor
    logits: torch.Tensor | None


class TwoStreamNet(nn.Module):
    """Two-stream re-ID network.

    Args:
        num_classes: training identities (classifier outputs).
        backbone: "resnet50" (paper) or "tiny" (CPU).
        width: base width of the tiny CNN.
        pretrained: optional ImageNet state-dict file (torchvision ResNet-50 names), loaded into both stems and
            the shared stages.
    """

    def __init__(
        self, num_classes: int, backbone: str = "resnet50", width: int = 16, pretrained: str | None = None
    ) -> None:
        super().__init__()
        if backbone not in ("resnet50", "tiny"):
            raise ValueError(f"backbone must be 'resnet50' or 'tiny', got {backbone!r}")
        base = ReidBackbone(backbone, last_stride=1, pooling="gem", num_classes=num_classes, width=width,
                            pretrained=pretrained)
        trunk = list(base.trunk)
        cut = 4 if backbone == "resnet50" else 2
        self.stem_visible = nn.Sequential(*trunk[:cut])
        self.stem_infrared = copy.deepcopy(self.stem_visible)
        self.to_layer3 = nn.Sequential(*trunk[cut:-1]) if backbone == "resnet50" else nn.Sequential(*trunk[cut:-2])
        self.layer4 = trunk[-1] if backbone == "resnet50" else nn.Sequential(*trunk[-2:])
        self.pool, self.bnneck, self.classifier = base.pool, base.bnneck, base.classifier
        self.feature_dim = base.feature_dim

    def stem(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        return self.stem_visible(x) if modality == "visible" else self.stem_infrared(x)

    def maps(self, x_visible: torch.Tensor, x_infrared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer3 and layer4 maps of cat([visible, infrared]) (training)."""
        x = torch.cat([self.stem(x_visible, "visible"), self.stem(x_infrared, "infrared")])
        f3 = self.to_layer3(x)
        return f3, self.layer4(f3)

    def head(self, f4: torch.Tensor) -> HeadOutput:
        """GeM (p=3) -> BNNeck -> classifier."""
        feat = self.pool(f4)
        bn = self.bnneck(feat)
        return HeadOutput(feat, bn, self.classifier(bn) if self.classifier is not None else None)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Test descriptor: L2-normalised GeM feature before the BNNeck (LbA's test feature); no CMAlign."""
        return F.normalize(self.pool(self.layer4(self.to_layer3(self.stem(x, modality)))), dim=1)
