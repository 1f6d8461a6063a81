"""DeepLab-v2 (Chen et al., TPAMI 2018) as used by UDA segmentation papers (AdaptSegNet, BPCL/DASS, ProDA).

A dilated ResNet (output stride 8: layer3 dilation 2, layer4 dilation 4) and an ASPP *classifier*: four parallel
3x3 convolutions with dilation (= padding) 6, 12, 18 and 24 straight to `num_classes`, whose outputs are **summed**
into the logits (DeepLab-v2 section 3.2, "ASPP-L"). No 1x1 branch, no image pooling, no projection (that is
DeepLab-v3, `cvlab_shared.models.deeplab`).

`forward` returns a `DeepLabV2Output(logits, branches, feature)`: logits at 1/8 of the input (callers upsample them,
as the official code does), the four branch outputs stacked along channels (4 x num_classes; what the BPCL release
contrasts) and the backbone feature (layer4). The ResNet is torchvision's (stride in the 3x3 conv), not the Caffe
variant of the original release (stride in the first 1x1 conv); ImageNet weights load from a file you name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from cvlab_shared.models.deeplab import build_resnet
from cvlab_shared.models.weights import load_pretrained

ASPP_RATES = (6, 12, 18, 24)


class DeepLabV2Output(NamedTuple):
    logits: torch.Tensor  # [N, K, h, w], sum of the ASPP branches
    branches: torch.Tensor  # [N, len(rates) * K, h, w], the branch outputs concatenated
    feature: torch.Tensor  # [N, C, h, w], backbone (layer4) output


class ASPPClassifier(nn.Module):
    """Parallel dilated 3x3 convs from the backbone feature to class scores; logits = sum of the branches."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.branches:  # the release's init: N(0, 0.01) weights
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed logits [N, K, h, w], stacked branches [N, R*K, h, w])."""
        outs = [conv(feature) for conv in self.branches]
        return torch.stack(outs).sum(0), torch.cat(outs, dim=1)


class DeepLabV2(nn.Module):
    """Dilated ResNet (output stride 8 by default) + four-branch ASPP classifier with summed logits."""

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "resnet101",
        output_stride: int = 8,
        rates: Sequence[int] = ASPP_RATES,
        pretrained: str | None = None,
        freeze_bn: bool = False,
    ) -> None:
        """
        Args:
            num_classes: output classes (19 for Cityscapes train ids).
            backbone: resnet101 (the papers'), resnet50, or resnet18 / resnet34 (small, for CPU runs).
            output_stride: 8 as in DeepLab-v2 (16 and 32 are accepted for small experiments).
            rates: ASPP dilation rates (6, 12, 18, 24).
            pretrained: ImageNet weights file for the backbone (torchvision names); none: from scratch.
            freeze_bn: keep backbone BN statistics and affine parameters fixed (the release's `fixbn: True`).
        """
        super().__init__()
        self.backbone, width = build_resnet(backbone, output_stride)
        load_pretrained(self.backbone, pretrained)
        self.classifier = ASPPClassifier(width, num_classes, rates)
        self.num_classes = num_classes
        self.feature_channels = width
        self.freeze_bn = freeze_bn
        if freeze_bn:
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.requires_grad_(False)
                    module.eval()  # from the start: Lightning's fit never calls train() on a new module

    def train(self, mode: bool = True) -> DeepLabV2:
        super().train(mode)
        if self.freeze_bn:
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone (layer4) feature at 1/output_stride."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> DeepLabV2Output:
        feature = self.forward_features(x)
        logits, branches = self.classifier(feature)
        return DeepLabV2Output(logits, branches, feature)

    def parameter_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """SGD groups of the release: backbone at `lr`, ASPP classifier at `head_lr_mult * lr`."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr, "base_lr": lr},
            {"params": list(self.classifier.parameters()), "lr": lr * head_lr_mult, "base_lr": lr * head_lr_mult},
        ]
