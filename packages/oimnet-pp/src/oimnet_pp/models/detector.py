"""The OIMNet / OIMNet++ / OIMNet+++ person-search network from torchvision's Faster R-CNN parts.

Image -> trunk (ResNet C1-C4, stride 16) -> RPN (anchors on C4) -> RoIAlign 14x14 of the proposals -> the shared
C5 head (ResNet layer4, stride 2) -> adaptive max pool -> three parallel outputs on the same proposals (OIMNet-style,
as the official code): person/background logits, class-specific box deltas, and the re-ID embedding
Linear(-> 256, no bias) -> ProtoNorm (OIMNet++) -> L2. Training labels come from torchvision's RoI sampler with
identity pids as class labels (0 background, 1..L labelled, 5555 unlabelled; ground-truth boxes are added to the
proposals), so every positive proposal carries its person's label and its IoU for LOIM. OIMNet+++ (`augment`)
replaces every BatchNorm2d of the C5 head by a 2-d ProtoNorm fed with the same labels.

Losses (official weights): RPN objectness and box (torchvision), proposal cross-entropy (labels clamped to {0, 1}),
proposal smooth-L1 (beta 1, summed over positives / sampled RoIs) x 10, and OIM / LOIM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from oimnet_pp.losses import LOIMLoss, OIMLoss
from oimnet_pp.protonorm import ProtoNorm

BACKBONES = ("resnet50", "resnet18", "tiny")


class Trunk(nn.Module):
    """C1-C4 of a ResNet (or the tiny CNN): stride 16 `feat_res4`."""

    def __init__(self, body: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"feat_res4": self.body(x)}


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def build_backbone(name: str, width: int = 32) -> tuple[Trunk, nn.Module, int]:
    """(trunk C1-C4, C5 head, C5 channels). ResNets are torchvision's without weights (`weights=None`)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    if name == "tiny":  # a small CPU stand-in: stride-16 trunk (ResNet-like stem) and a stride-2 head
        w = width
        body = nn.Sequential(
            _conv(3, w, 2),
            nn.MaxPool2d(3, 2, 1),
            _conv(w, 2 * w, 1),
            _conv(2 * w, 2 * w, 2),
            _conv(2 * w, 4 * w, 2),
            _conv(4 * w, 4 * w, 1),
        )
        head = nn.Sequential(
            _conv(4 * w, 8 * w, 2), nn.Conv2d(8 * w, 8 * w, 1, bias=False), nn.BatchNorm2d(8 * w), nn.ReLU(inplace=True)
        )
        return Trunk(body, 4 * w), head, 8 * w
    net = getattr(torchvision.models, name)(weights=None)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    c4 = net.layer3[-1].conv2.out_channels * (4 if name == "resnet50" else 1)
    c5 = net.layer4[-1].conv2.out_channels * (4 if name == "resnet50" else 1)
    # the official code freezes conv1 and bn1 only (no FrozenBN; the other BatchNorms train)
    for p in [net.conv1.weight, net.bn1.weight, net.bn1.bias]:
        p.requires_grad_(False)
    return Trunk(body, c4), net.layer4, c5


class ProtoNormSequential(nn.Module):
    """Runs a module tree whose ProtoNorm layers need the RoI labels: the labels are handed to each of them."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        norms = [m for m in self.module.modules() if isinstance(m, _TargetedNorm)]
        for m in norms:
            m.targets = targets
        try:
            return self.module(x)
        finally:
            for m in norms:
                m.targets = None


class _TargetedNorm(ProtoNorm):
    """ProtoNorm that takes its targets from an attribute (set by ProtoNormSequential for one forward)."""

    targets: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        return super().forward(x, self.targets if targets is None else targets)


def convert_bn_to_protonorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d under `module` becomes a 2-d ProtoNorm with the same eps/momentum/affine and statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            pn = _TargetedNorm(child.num_features, child.eps, child.momentum or 0.1, child.affine)
            pn.running_mean.copy_(child.running_mean)
            pn.running_var.copy_(child.running_var)
            if child.affine:
                pn.weight.data.copy_(child.weight.data)
                pn.bias.data.copy_(child.bias.data)
            setattr(module, name, pn)
        else:
            convert_bn_to_protonorm(child)
    return module


class OIMNet(nn.Module):
    """OIMNet / OIMNet++ / OIMNet+++ (see the module docstring); every official setting is an argument.

    Args:
        num_pids: lookup-table rows (labelled training identities).
        cq_size: circular-queue rows.
        backbone: "resnet50" (paper), "resnet18" or "tiny" (CPU).
        width: base width of the tiny backbone.
        embedding_dim: re-ID feature size (256).
        norm_type: "protonorm" (OIMNet++) or "none" (OIMNet).
        loss_type: "LOIM" (OIMNet++) or "OIM".
        augment: OIMNet+++: ProtoNorm2d in the C5 head.
        oim_momentum, oim_scalar, oim_eps, table_dtype: OIM / LOIM settings.
        min_size, max_size: GeneralizedRCNNTransform resize (900 / 1500).
        anchor_sizes, aspect_ratios: RPN anchors on C4 (official ((8, 16, 32),), ((0.5, 1, 2),)).
        rpn_*: RPN sampling / NMS settings (official values as defaults).
        roi_batch_size, roi_positive_fraction, roi_fg_iou, roi_bg_iou: RoI sampling.
        score_thresh, nms_thresh, detections_per_img: test-time post-processing (0.5, 0.4, 300).
        proposal_reg_weight: weight of the proposal box loss (10).
        roi_output_size: RoIAlign output side (14; the C5 head halves it).
    """

    def __init__(
        self,
        num_pids: int,
        cq_size: int = 5000,
        backbone: str = "resnet50",
        width: int = 32,
        embedding_dim: int = 256,
        norm_type: str = "protonorm",
        loss_type: str = "LOIM",
        augment: bool = False,
        oim_momentum: float = 0.5,
        oim_scalar: float = 30.0,
        oim_eps: float = 0.1,
        table_dtype: str = "float32",
        min_size: int = 900,
        max_size: int = 1500,
        anchor_sizes: tuple[tuple[int, ...], ...] = ((8, 16, 32),),
        aspect_ratios: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),),
        rpn_pre_nms_top_n_train: int = 12000,
        rpn_pre_nms_top_n_test: int = 6000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 300,
        rpn_nms_thresh: float = 0.7,
        rpn_batch_size: int = 256,
        roi_batch_size: int = 128,
        roi_positive_fraction: float = 0.5,
        roi_fg_iou: float = 0.5,
        roi_bg_iou: float = 0.5,
        score_thresh: float = 0.5,
        nms_thresh: float = 0.4,
        detections_per_img: int = 300,
        proposal_reg_weight: float = 10.0,
        roi_output_size: int = 14,
    ) -> None:
        super().__init__()
        if norm_type not in ("protonorm", "none"):
            raise ValueError(f"norm_type must be 'protonorm' or 'none', got {norm_type!r}")
        if loss_type not in ("OIM", "LOIM"):
            raise ValueError(f"loss_type must be 'OIM' or 'LOIM', got {loss_type!r}")
        self.trunk, head, c5 = build_backbone(backbone, width)
        self.head = ProtoNormSequential(convert_bn_to_protonorm(head) if augment else head)
        self.transform = GeneralizedRCNNTransform(min_size, max_size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        anchors = AnchorGenerator(tuple(tuple(s) for s in anchor_sizes), tuple(tuple(r) for r in aspect_ratios))
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(self.trunk.out_channels, anchors.num_anchors_per_location()[0]),
            0.7,
            0.3,
            rpn_batch_size,
            0.5,
            {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            rpn_nms_thresh,
        )
        self.roi_pool = MultiScaleRoIAlign(["feat_res4"], roi_output_size, 2)
        # torchvision's RoIHeads is used for its proposal sampler and box coder only (its box head is never run)
        self.sampler = RoIHeads(
            self.roi_pool,
            nn.Identity(),
            nn.Identity(),
            roi_fg_iou,
            roi_bg_iou,
            roi_batch_size,
            roi_positive_fraction,
            None,
            score_thresh,
            nms_thresh,
            detections_per_img,
        )
        self.cls_score = nn.Linear(c5, 2)
        self.bbox_pred = nn.Linear(c5, 8)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.embed = nn.Linear(c5, embedding_dim, bias=False)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.norm = ProtoNorm(embedding_dim) if norm_type == "protonorm" else None
        loss_cls = LOIMLoss if loss_type == "LOIM" else OIMLoss
        kwargs = {"eps": oim_eps} if loss_type == "LOIM" else {}
        self.reid_loss = loss_cls(embedding_dim, num_pids, cq_size, oim_momentum, oim_scalar, table_dtype, **kwargs)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.proposal_reg_weight = proposal_reg_weight

    # ---- pieces ---------------------------------------------------------------------------------------------
    def roi_features(self, features, boxes, image_sizes, labels: torch.Tensor | None = None) -> torch.Tensor:
        """C5 head on RoIAlign of `boxes`, adaptive max pooled: (R, C5)."""
        x = self.roi_pool(features, boxes, image_sizes)
        x = self.head(x, labels)
        return F.adaptive_max_pool2d(x, 1).flatten(1)

    def embedding(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Linear -> ProtoNorm (training: prototype statistics of `labels`) -> L2."""
        x = self.embed(h)
        if self.norm is not None:
            x = self.norm(x, labels if self.training else None)
        return F.normalize(x, dim=1)

    # ---- training -------------------------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Training losses for a batch of images with {"boxes" xyxy, "labels" pids} targets."""
        images, targets = self.transform(images, targets)
        features = self.trunk(images.tensors)
        proposals, rpn_losses = self.rpn(images, features, targets)
        proposals, matched, labels, reg_targets = self.sampler.select_training_samples(proposals, targets)
        ious = []
        for props, t in zip(proposals, targets):
            iou = box_iou(props, t["boxes"]).max(1).values if len(t["boxes"]) else props.new_zeros(len(props))
            ious.append(iou)
        labels_all = torch.cat(labels)
        h = self.roi_features(features, proposals, images.image_sizes, labels_all)
        cls_logits = self.cls_score(h)
        box_deltas = self.bbox_pred(h)
        binary = labels_all.clamp(max=1)
        loss_cls = F.cross_entropy(cls_logits, binary)
        pos = torch.nonzero(binary > 0).flatten()
        reg = box_deltas.reshape(len(h), 2, 4)[pos, 1]
        loss_reg = F.smooth_l1_loss(reg, torch.cat(reg_targets)[pos], reduction="sum") / max(len(labels_all), 1)
        emb = self.embedding(h, labels_all)
        loss_reid = self.reid_loss(emb, labels_all, torch.cat(ious).clamp(min=0.7))
        return {
            "loss_rpn_cls": rpn_losses["loss_objectness"],
            "loss_rpn_reg": rpn_losses["loss_rpn_box_reg"],
            "loss_proposal_cls": loss_cls,
            "loss_proposal_reg": self.proposal_reg_weight * loss_reg,
            "loss_box_reid": loss_reid,
        }

    # ---- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Gallery pass: per image {"boxes" (n, 4) in input pixels, "scores", "embeddings" (n, D)}."""
        original = [img.shape[-2:] for img in images]
        images, _ = self.transform(images)
        features = self.trunk(images.tensors)
        proposals, _ = self.rpn(images, features)
        counts = [len(p) for p in proposals]
        h = self.roi_features(features, proposals, images.image_sizes)
        scores = F.softmax(self.cls_score(h), -1)[:, 1]
        deltas = self.bbox_pred(h).reshape(len(h), 2, 4)[:, 1]
        boxes = self.sampler.box_coder.decode(deltas, proposals).reshape(-1, 4)
        emb = self.embedding(h)
        out = []
        for i, (b, s, e) in enumerate(zip(boxes.split(counts), scores.split(counts), emb.split(counts))):
            b = clip_boxes_to_image(b, images.image_sizes[i])
            keep = torch.nonzero(s > self.score_thresh).flatten()
            keep = keep[remove_small_boxes(b[keep], 1e-2)]
            b, s, e = b[keep], s[keep], e[keep]
            keep = batched_nms(b, s, torch.ones_like(s, dtype=torch.long), self.nms_thresh)[: self.detections_per_img]
            out.append({"boxes": b[keep], "scores": s[keep], "embeddings": e[keep]})
        return self._to_input_size(out, images.image_sizes, original)

    @torch.no_grad()
    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Query pass: embeddings of given boxes (e.g. the query's ground truth), no detection."""
        targets = [
            {"boxes": b.float(), "labels": torch.zeros(len(b), dtype=torch.long, device=b.device)} for b in boxes
        ]
        images, targets = self.transform(images, targets)
        features = self.trunk(images.tensors)
        rois = [t["boxes"] for t in targets]
        emb = self.embedding(self.roi_features(features, rois, images.image_sizes))
        return list(emb.split([len(b) for b in boxes]))

    @staticmethod
    def _to_input_size(out, sizes, original):
        for o, s, orig in zip(out, sizes, original):
            ratio = torch.tensor([orig[1] / s[1], orig[0] / s[0]] * 2, device=o["boxes"].device)
            o["boxes"] = o["boxes"] * ratio
        return out
