"""The ALIFE network on the core's DeepLabV3: softmax head with background at channel 0, one classifier group per
step (group 0 = background + base classes), logits upsampled with align_corners=True, and the stage freezes."""

from __future__ import annotations

import torch
from torch import nn

from cvlab_shared.data.incremental import IncrementalTask
from cvlab_shared.models.deeplab import DeepLabV3, IncrementalClassifier
from alife.losses import init_like_mib


def classes_per_step(task: IncrementalTask, step: int) -> list[int]:
    """Classifier groups of the step-t model: background + base classes, then the classes of steps 1..t."""
    return [1 + len(task.new_classes(0))] + [len(task.new_classes(s)) for s in range(1, step + 1)]


def build_network(
    groups: list[int], backbone: str, output_stride: int, feature_channels: int, pretrained: str | None = None
) -> DeepLabV3:
    """DeepLabV3 with ALIFE's head (dropout 0.5 in ASPP as torchvision/ALIFE, align_corners=True)."""
    return DeepLabV3(groups, backbone=backbone, output_stride=output_stride, feature_channels=feature_channels,
                     aspp_dropout=0.5, align_corners=True, pretrained=pretrained)


@torch.no_grad()
def init_classifier_like_mib(classifier: IncrementalClassifier) -> None:
    """MiB init of the newest group from the background row (group 0, row 0), in place."""
    weight, bias = classifier.weight().clone(), classifier.bias().clone()
    num_new = classifier.heads[-1].out_channels
    init_like_mib(weight, bias, num_new)
    classifier.heads[-1].weight.copy_(weight[-num_new:].view_as(classifier.heads[-1].weight))
    classifier.heads[-1].bias.copy_(bias[-num_new:])
    classifier.heads[0].bias[0] = bias[0]


def freeze(net: DeepLabV3, stage: str) -> None:
    """`step1`: backbone and ASPP BN frozen (statistics and affine) and their dropout off, the rest trainable;
    `step3`: backbone, ASPP and the decoder conv frozen entirely, only the classifiers train (official FREEZE_TYPE).
    Call again after every `train()` (Lightning switches modules back to training mode each epoch)."""
    if stage not in ("step1", "step3"):
        raise ValueError(f"stage must be step1 or step3, got {stage!r}")
    frozen = [net.backbone, net.aspp] + ([net.last_conv] if stage == "step3" else [])
    for part in frozen:
        for module in part.modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
                module.eval()
                for param in module.parameters(recurse=False):
                    param.requires_grad_(False)
            if stage == "step3":
                for param in module.parameters(recurse=False):
                    param.requires_grad_(False)
    if stage == "step3":
        net.last_conv.eval()


def predict(logits: torch.Tensor) -> torch.Tensor:
    """ALIFE inference: arg-max of the softmax head (background = channel 0). (N, C, H, W) -> (N, H, W)."""
    return logits.argmax(dim=1)
