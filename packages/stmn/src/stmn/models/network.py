"""The STMN network (Eom et al., ICCV'21, Fig. 2): a shared trunk up to the last stage, then three copies of the last
stage (value, spatial key, temporal key; the two key copies without their final ReLU), the spatial memory on every
frame, the temporal memory over the S frames, and BNNeck + bias-free classifier heads on both branches.

`spatial_memory=False` replaces f^s by GAP(f) and `temporal_memory=False` replaces the weighted sum by the frame
average, so the same class gives the ablations (no memory = a plain frame-averaging baseline).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from cvlab_shared.models.reid import build_model as build_reid_backbone
from stmn.memory import SpatialMemory, TemporalMemory


class _NoFinalReLU(nn.Module):
    """A torchvision residual block whose output skips the last ReLU (official `Bottleneck_key`)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        identity = x if b.downsample is None else b.downsample(x)
        out = b.relu(b.bn1(b.conv1(x)))
        if isinstance(b, Bottleneck):
            out = b.relu(b.bn2(b.conv2(out)))
            return b.bn3(b.conv3(out)) + identity
        return b.bn2(b.conv2(out)) + identity


def _key_branch(stage: nn.Module) -> nn.Module:
    """A copy of the last stage with its final ReLU removed."""
    branch = copy.deepcopy(stage)
    last_parent = branch
    while True:  # walk to the last leaf container
        children = list(last_parent.named_children())
        if not children:
            break
        name, child = children[-1]
        if isinstance(child, (Bottleneck, BasicBlock)):
            setattr(last_parent, name, _NoFinalReLU(child))
            return branch
        if isinstance(child, nn.ReLU):
            setattr(last_parent, name, nn.Identity())
            return branch
        last_parent = child
    raise ValueError("the last stage ends neither in a ResNet block nor in a ReLU")


class StmnOutput(NamedTuple):
    """Per batch of B tracklets x S frames (D = feature size, C = classes)."""

    frame_features: torch.Tensor  # (B, S, D) f^s before BN
    sequence_features: torch.Tensor  # (B, D) o before BN
    embedding: torch.Tensor  # (B, D) bn_t(o), the test feature
    logits_s: torch.Tensor | None  # (B, C) frame-averaged
    logits_t: torch.Tensor | None  # (B, C)
    spread_s: torch.Tensor
    spread_t: torch.Tensor
    spatial_attention: torch.Tensor | None  # (B * S * rows per frame, M_s)
    frame_weights: torch.Tensor  # (B, S)


def _bnneck(dim: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    nn.init.constant_(bn.weight, 1.0)
    nn.init.constant_(bn.bias, 0.0)
    return bn


def _classifier(dim: int, num_classes: int) -> nn.Linear | None:
    if num_classes <= 0:
        return None
    cls = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(cls.weight, std=0.001)
    return cls


class STMN(nn.Module):
    """Spatial and Temporal Memory Network.

    Args:
        num_classes: training identities (0: no classifiers, embedding only).
        backbone: "resnet50" (paper), "resnet18" or "tiny" (CPU runs); see `cvlab_shared.models.reid`.
        last_stride: stride of the last stage (1 in the paper: 16 x 8 maps at 256 x 128).
        width: base width of the tiny CNN.
        pretrained: optional ImageNet state dict for the ResNet trunk (all three last-stage copies start from it).
        seq_len: frames per tracklet S (the temporal value memory is M_t x S).
        smem_size, tmem_size: memory slots M_s (10) and M_t (5).
        smem_margin, tmem_margin: spread-loss margins (0.3).
        spatial_memory, temporal_memory: switch each memory off (ablations).
        spatial_layout: "position" (paper) or "official" (reshape without permute).
        key_norm: "key" (paper) or "slot" (official).
    """

    def __init__(
        self,
        num_classes: int = 0,
        backbone: str = "resnet50",
        last_stride: int = 1,
        width: int = 16,
        pretrained: str | None = None,
        seq_len: int = 6,
        smem_size: int = 10,
        tmem_size: int = 5,
        smem_margin: float = 0.3,
        tmem_margin: float = 0.3,
        spatial_memory: bool = True,
        temporal_memory: bool = True,
        spatial_layout: str = "position",
        key_norm: str = "key",
    ) -> None:
        super().__init__()
        base = build_reid_backbone(backbone, 0, last_stride, "avg", width, pretrained)
        split = len(base.trunk) - (2 if backbone == "tiny" else 1)  # tiny: the last stage is two conv blocks
        self.trunk = nn.Sequential(*list(base.trunk)[:split])
        self.layer4_val = nn.Sequential(*list(base.trunk)[split:])
        self.feature_dim = dim = base.feature_dim
        self.seq_len = seq_len
        self.layer4_key_s = _key_branch(self.layer4_val) if spatial_memory else None
        self.layer4_key_t = _key_branch(self.layer4_val) if temporal_memory else None
        self.smem = SpatialMemory(dim, smem_size, smem_margin, spatial_layout, key_norm) if spatial_memory else None
        self.tmem = TemporalMemory(dim, tmem_size, tmem_margin, seq_len, key_norm) if temporal_memory else None
        self.bn_s, self.bn_t = _bnneck(dim), _bnneck(dim)
        self.cls_s, self.cls_t = _classifier(dim, num_classes), _classifier(dim, num_classes)

    def forward(self, x: torch.Tensor) -> StmnOutput:
        """`x`: (B, S, 3, H, W) tracklet clips."""
        b, s = x.shape[:2]
        if s != self.seq_len:
            raise ValueError(f"expected clips of seq_len={self.seq_len} frames, got {s}")
        shared = self.trunk(x.flatten(0, 1))
        val = self.layer4_val(shared)
        zero = val.new_zeros(())
        attention = None
        if self.smem is not None:
            spatial = self.smem(self.layer4_key_s(shared), val)
            frames, spread_s, attention = spatial.features, spatial.loss, spatial.attention
        else:
            frames, spread_s = val.mean(dim=(2, 3)), zero
        if self.tmem is not None:
            query = self.layer4_key_t(shared).mean(dim=(2, 3))
            temporal = self.tmem(query, frames)
            seq, spread_t, weights = temporal.features, temporal.loss, temporal.weights
        else:
            seq, spread_t = frames.reshape(b, s, -1).mean(1), zero
            weights = torch.full((b, s), 1.0 / s, device=x.device, dtype=frames.dtype)
        embedding = self.bn_t(seq)
        logits_s = logits_t = None
        if self.cls_s is not None:
            logits_s = self.cls_s(self.bn_s(frames)).reshape(b, s, -1).mean(1)
            logits_t = self.cls_t(embedding)
        return StmnOutput(
            frames.reshape(b, s, -1), seq, embedding, logits_s, logits_t, spread_s, spread_t, attention, weights
        )

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Test feature bn_t(o) of (B, S, 3, H, W) clips."""
        return self(x).embedding


def build_model(num_classes: int = 0, **kwargs) -> STMN:
    """An STMN network (see `STMN` for the arguments)."""
    return STMN(num_classes, **kwargs)
