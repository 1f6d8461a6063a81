"""DeepLabV3 (Chen et al., 2017) from torchvision parts, with a classifier that grows one row-group per learning step.

Class-incremental segmentation papers (DKD, ALIFE, MiB, PLOP, SSUL) share this model: a dilated ResNet (output
stride 16 by default), ASPP (1x1 + three atrous 3x3 + image pooling, projected to 256 channels), an extra 3x3 conv
(256 + BN + ReLU) whose output is the *penultimate feature*, and a list of 1x1 conv classifiers, one per step.
The channel layout of the logits is the concatenation of the groups; what channel 0 means is the caller's
convention: a background class (softmax methods, group 0 = background + base classes) or an auxiliary
"unknown" classifier (DKD, group 0 of size 1, see `detach_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models.segmentation.deeplabv3 import ASPP

from cvlab_shared.models.weights import load_pretrained

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


class IncrementalClassifier(nn.Module):
    """1x1 conv classifiers, one per learning step, whose outputs are concatenated along channels.

    `detach_groups` lists groups that see a detached feature, so the feature extractor gets no gradient from them
    (DKD's auxiliary classifier, group 0).
    """

    def __init__(self, in_channels: int, classes_per_step: Sequence[int], detach_groups: Sequence[int] = ()) -> None:
        super().__init__()
        if not classes_per_step or min(classes_per_step) < 1:
            raise ValueError(f"classes_per_step must be positive counts, got {list(classes_per_step)}")
        self.in_channels = in_channels
        self.detach_groups = tuple(detach_groups)
        self.heads = nn.ModuleList(nn.Conv2d(in_channels, n, kernel_size=1) for n in classes_per_step)

    @property
    def classes_per_step(self) -> list[int]:
        return [head.out_channels for head in self.heads]

    @property
    def num_classes(self) -> int:
        return sum(self.classes_per_step)

    def group_slice(self, group: int) -> slice:
        """Channels of group `group` in the concatenated logits."""
        sizes = self.classes_per_step
        start = sum(sizes[:group])
        return slice(start, start + sizes[group])

    def weight(self) -> torch.Tensor:
        """All classifier rows, (num_classes, in_channels), in logit-channel order."""
        return torch.cat([head.weight.flatten(1) for head in self.heads], dim=0)

    def bias(self) -> torch.Tensor:
        """All classifier biases, (num_classes,)."""
        return torch.cat([head.bias for head in self.heads], dim=0)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        outs = [head(feature.detach() if i in self.detach_groups else feature) for i, head in enumerate(self.heads)]
        return torch.cat(outs, dim=1)


def _dilate_basic_layer(layer: nn.Sequential, dilation: int, previous: int) -> None:
    """Turn a stride-2 layer of BasicBlocks into a stride-1 dilated one (torchvision only does this for Bottleneck)."""
    for index, block in enumerate(layer):
        first = previous if index == 0 else dilation
        for conv, d in ((block.conv1, first), (block.conv2, dilation)):
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def build_resnet(name: str, output_stride: int = 16) -> tuple[resnet.ResNet, int]:
    """A torchvision ResNet without its classifier, dilated to `output_stride` (8, 16 or 32); returns it and its width."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got '{name}'")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    dilate = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}[output_stride]
    bottleneck = name in ("resnet50", "resnet101")
    net = getattr(resnet, name)(weights=None, replace_stride_with_dilation=dilate if bottleneck else None)
    if not bottleneck:
        dilation = 1
        for layer, flag in zip((net.layer2, net.layer3, net.layer4), dilate):
            if flag:
                _dilate_basic_layer(layer, dilation * 2, dilation)
                dilation *= 2
    net.fc = nn.Identity()
    return net, net.inplanes


@torch.no_grad()
def init_head(*modules: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-in, ReLU gain), BN weight 1 and bias 0: the official DKD/SSUL `_init_weight`
    of the ASPP and the last 3x3 conv (PyTorch's default conv init is Kaiming-uniform with a = sqrt(5), ~2.4x narrower).
    """
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight)
            elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)


class DeepLabV3(nn.Module):
    """DeepLabV3: dilated ResNet + ASPP + 3x3 conv (the penultimate feature) + an `IncrementalClassifier`.

    The ASPP and the 3x3 conv start from Kaiming-normal weights (`init_head`), as the official DKD model.

    `forward` returns `(logits, feature)`: logits bilinearly upsampled to the input size, feature at 1/output_stride.
    """

    def __init__(
        self,
        classes_per_step: Sequence[int],
        backbone: str = "resnet101",
        output_stride: int = 16,
        feature_channels: int = 256,
        aspp_dropout: float = 0.1,
        backbone_bn_momentum: float | None = None,
        detach_groups: Sequence[int] = (),
        align_corners: bool = False,
        pretrained: str | None = None,
    ) -> None:
        """
        Args:
            classes_per_step: logit channels added at each step (e.g. DKD VOC 15-1: [1, 15, 1, 1, 1, 1, 1]).
            backbone: resnet18 / resnet34 (small, for CPU runs) or resnet50 / resnet101 (the papers').
            output_stride: 16 (atrous rates 6/12/18) or 8 (12/24/36); 32 keeps the ResNet undilated.
            feature_channels: width of ASPP and of the penultimate feature.
            aspp_dropout: dropout after the ASPP projection (DKD 0.1, torchvision 0.5).
            backbone_bn_momentum: BN momentum inside the backbone (DKD 0.01); None keeps PyTorch's 0.1.
            detach_groups: classifier groups trained on a detached feature (DKD's auxiliary classifier: [0]).
            align_corners: of the final bilinear upsampling (DKD False, ALIFE True).
            pretrained: a file of ImageNet weights for the backbone (torchvision key names), loaded if given.
        """
        super().__init__()
        self.backbone, width = build_resnet(backbone, output_stride)
        if backbone_bn_momentum is not None:
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.momentum = backbone_bn_momentum
        if pretrained:
            load_pretrained(self.backbone, pretrained)
        rates = (6, 12, 18) if output_stride >= 16 else (12, 24, 36)
        self.aspp = ASPP(width, rates, feature_channels)
        self.aspp.project[3] = nn.Dropout(aspp_dropout)
        self.last_conv = nn.Sequential(
            nn.Conv2d(feature_channels, feature_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(feature_channels),
            nn.ReLU(),
        )
        self.classifier = IncrementalClassifier(feature_channels, classes_per_step, detach_groups)
        self.align_corners = align_corners
        init_head(self.aspp, self.last_conv)


    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """ResNet features before the global pooling, at 1/output_stride."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate feature (after ASPP and the 3x3 conv, post-ReLU so non-negative), (N, 256, h, w)."""
        return self.last_conv(self.aspp(self.forward_backbone(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.forward_features(x)
        logits = self.classifier(feature)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return logits, feature
