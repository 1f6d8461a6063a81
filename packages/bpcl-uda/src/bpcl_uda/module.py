"""The LightningModule of one BPCL stage: source-only training, or one self-training round with pixel-prototype contrast.

Adaptation objective (release trainer/damnet_trainer.py, paper section 3):
    L = CE(source) + lambda_t CE(target, pseudo) + lambda_e (H(source) + lambda_t H(target))
        + lambda_t2s L_t2s + lambda_s2t L_s2t
with pseudo = the round's static labels, or (paper default) hybrid static + dynamic labels from label transfer.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from bpcl_uda.losses import IGNORE_INDEX, PixelPrototypeContrast, entropy_map
from bpcl_uda.prototypes import PrototypeMemory, hybrid_pseudo_labels, transfer_labels
from cvlab_shared.data.segmentation import CITYSCAPES_CLASSES
from cvlab_shared.metrics.segmentation import SegmentationMetrics
from cvlab_shared.metrics.uda import uda_scores
from cvlab_shared.models.deeplabv2 import DeepLabV2

STAGES = ("source_only", "adapt")
FEATURES = ("backbone", "branches")


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling with align_corners=True, as the release does for training and evaluation."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """CE with ignore 255; 0 (with a graph) when every pixel is ignored."""
    if not bool((label != IGNORE_INDEX).any()):
        return logits.sum() * 0
    return F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)


def load_net_weights(path: str) -> dict[str, torch.Tensor]:
    """The network weights (`net.*`, prefix removed) of a BPCL stage checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


class BPCLModule(pl.LightningModule):
    """DeepLab-v2 trained source-only (`stage='source_only'`) or adapted with BPCL (`stage='adapt'`)."""

    def __init__(
        self,
        stage: str = "source_only",
        num_classes: int = 19,
        backbone: str = "resnet101",
        output_stride: int = 8,
        pretrained: str | None = None,
        freeze_bn: bool = True,
        init_checkpoint: str | None = None,
        rounds: int = 10,
        source_only_epochs: int | None = None,
        round_index: int = 0,
        lr: float = 7.5e-5,
        round_lr_decay: float = 0.5,
        head_lr_mult: float = 10.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        poly_power: float = 0.9,
        poly_horizon: float = 1.2,
        lambda_target: float = 0.3,
        lambda_entropy: float = 0.4,
        lambda_t2s: float = 0.2,
        lambda_s2t: float = 0.2,
        temperature: float = 0.1,
        contrast_feature: str = "backbone",
        release_contrast: bool = False,
        release_entropy: bool = False,
        prototype_momentum: float = 0.99,
        dynamic_labels: bool = True,
        transfer_threshold: float = 0.8,
        calibration: bool = True,
        calibration_momentum: float = 0.99,
        calibration_ramp: float = 1.0,
        class_proportion: float = 0.1,
        image_proportion: float = 0.1,
    ) -> None:
        """
        Args:
            stage: 'source_only' (CE on source) or 'adapt' (one self-training round with BPCL).
            num_classes: 19 Cityscapes train ids.
            backbone: resnet101 (paper) or resnet18 (small CPU runs).
            output_stride: 8 (DeepLab-v2).
            pretrained: ImageNet weights file for the backbone (source-only stage).
            freeze_bn: fixed backbone BN (release `fixbn: True`).
            init_checkpoint: stage checkpoint to start from (the driver passes the previous stage's best).
            rounds: number of self-training rounds (read by the `bpcl-uda train` driver).
            source_only_epochs: epochs of the source-only stage (driver; None: trainer.max_epochs as every stage).
            round_index: this round (0-based); the learning rate is lr * round_lr_decay ** round_index.
            lr: backbone learning rate (release 7.5e-5); the ASPP classifier gets head_lr_mult x.
            round_lr_decay: learning-rate factor per round (release 0.5).
            head_lr_mult: classifier learning-rate multiplier (release 10).
            momentum: SGD momentum.
            weight_decay: SGD weight decay (release 5e-4).
            poly_power: poly decay exponent (0.9).
            poly_horizon: poly horizon as a multiple of the stage's steps (release 1.2).
            lambda_target: weight of target CE and target entropy (release 0.3).
            lambda_entropy: weight of the entropy term (release 0.4).
            lambda_t2s: weight of target-pixels-vs-source-prototypes contrast (release 0.2; SYNTHIA config 0).
            lambda_s2t: weight of source-pixels-vs-target-prototypes contrast (release 0.2; SYNTHIA config 0).
            temperature: contrast temperature tau (0.1).
            contrast_feature: 'backbone' (layer4 feature, our paper default) or 'branches' (stacked ASPP outputs,
                the release).
            release_contrast: the release's per-pair batch prototypes (-1 for absent, upsampled logits).
            release_entropy: the release's entropy on log-softmax of probabilities.
            prototype_momentum: momentum of the prototype memory (paper convention).
            dynamic_labels: combine static pseudo labels with label-transfer labels (hybrid; paper).
            transfer_threshold: confidence needed for a label-transfer label.
            calibration: class-wise prototype calibration for label transfer (paper).
            calibration_momentum: momentum of the calibration bias.
            calibration_ramp: share of the round's steps over which the calibration strength goes 0 -> 1.
            class_proportion: class-balanced pseudo-label share per class (release cb_prop 0.1).
            image_proportion: per-image most-confident share always kept (release 0.1).
        """
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if contrast_feature not in FEATURES:
            raise ValueError(f"contrast_feature must be one of {FEATURES}, got {contrast_feature!r}")
        self.save_hyperparameters()
        self.net = DeepLabV2(
            num_classes,
            backbone,
            output_stride,
            pretrained=pretrained if stage == "source_only" else None,
            freeze_bn=freeze_bn,
        )
        channels = self.net.feature_channels if contrast_feature == "backbone" else 4 * num_classes
        self.memory = PrototypeMemory(num_classes, channels, prototype_momentum, calibration_momentum)
        self.contrast = PixelPrototypeContrast(
            num_classes, temperature, lambda_t2s, lambda_s2t, release=release_contrast
        )
        self.val_metric = SegmentationMetrics(num_classes)
        self.test_metric = SegmentationMetrics(num_classes)
        self.test_results: dict[str, Any] = {}
        self._loaded = False

    def setup(self, stage: str) -> None:
        h = self.hparams
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and datamodule.adapting != (h.stage == "adapt"):
            raise ValueError(
                f"model.stage={h.stage} needs data.pseudo_label_dir {'set' if h.stage == 'adapt' else 'unset'}"
            )
        if stage == "fit" and h.init_checkpoint and not self._loaded:
            missing, unexpected = self.net.load_state_dict(load_net_weights(h.init_checkpoint), strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{h.init_checkpoint} is not a BPCL checkpoint of this model "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            self._loaded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at 1/8 resolution."""
        return self.net(x).logits

    def _contrast_feature(self, out) -> torch.Tensor:
        return out.feature if self.hparams.contrast_feature == "backbone" else out.branches

    def calibration_strength(self) -> float:
        """beta in [0, 1]: the share of the ramp done (1 outside a Trainer)."""
        if self._trainer is None:
            return 1.0
        total = max(1, int(self.trainer.estimated_stepping_batches * self.hparams.calibration_ramp))
        return min(1.0, self.global_step / total)

    # -- training ---------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        h = self.hparams
        if h.stage == "source_only":
            image, label = batch
            loss = cross_entropy(upsample(self.net(image).logits, label.shape[-2:]), label)
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)
            return loss
        (image_s, label_s), (image_t, label_t) = batch["source"], batch["target"]
        out_s, out_t = self.net(image_s), self.net(image_t)
        logits_s, logits_t = upsample(out_s.logits, label_s.shape[-2:]), upsample(out_t.logits, label_t.shape[-2:])
        feature_s, feature_t = self._contrast_feature(out_s), self._contrast_feature(out_t)
        pseudo = label_t
        parts: dict[str, torch.Tensor] = {}
        if h.release_contrast:
            metric, terms = self.contrast(feature_s, label_s, feature_t, label_t)
        else:
            memory = self.memory
            memory.update("source", feature_s, label_s)
            if h.dynamic_labels:
                prototypes = memory.calibrated_source(self.calibration_strength()) if h.calibration else memory.source
                dynamic = transfer_labels(
                    feature_t, prototypes, memory.seen_source, label_t.shape[-2:], h.temperature, h.transfer_threshold
                )
                pseudo = hybrid_pseudo_labels(label_t, dynamic)
                parts["pseudo_agree"] = ((dynamic == label_t) & (label_t != IGNORE_INDEX)).float().sum() / (
                    label_t != IGNORE_INDEX
                ).sum().clamp_min(1)
            memory.update("target", feature_t, pseudo)
            if h.calibration:
                memory.update_calibration()
            metric, terms = self.contrast(
                feature_s,
                label_s,
                feature_t,
                pseudo,
                memory.source,
                memory.target,
                memory.seen_source,
                memory.seen_target,
            )
        ce_s, ce_t = cross_entropy(logits_s, label_s), cross_entropy(logits_t, pseudo)
        entropy = (
            entropy_map(logits_s, h.release_entropy).mean()
            + h.lambda_target * entropy_map(logits_t, h.release_entropy).mean()
        )
        loss = ce_s + h.lambda_target * ce_t + h.lambda_entropy * entropy + metric
        parts.update({"ce_source": ce_s, "ce_target": ce_t, "entropy": entropy, **terms})
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        for name, value in parts.items():
            self.log(f"train/{name}", value, sync_dist=True)
        return loss

    # -- evaluation -------------------------------------------------------------------------------------------------
    def predict_full(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Class scores upsampled to the label size `size` (official evaluation)."""
        return upsample(self.net(image).logits, size)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        image, label = batch
        self.val_metric.update(self.predict_full(image, label.shape[-2:]).argmax(1), label)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        image, label = batch
        self.test_metric.update(self.predict_full(image, label.shape[-2:]).argmax(1), label)

    def on_validation_epoch_end(self) -> None:
        iou = self.val_metric.per_class_iou()
        self.val_metric.reset()
        for name, value in uda_scores(iou).items():
            self.log(f"val/{name}", value)

    def on_test_epoch_end(self) -> None:
        iou = self.test_metric.per_class_iou()
        self.test_metric.reset()
        scores = uda_scores(iou)
        for name, value in scores.items():
            self.log(f"test/{name}", value)
        self.test_results = {**scores, "per_class": dict(zip(CITYSCAPES_CLASSES, iou.tolist(), strict=True))}

    # -- optimisation -----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        lr = h.lr * (h.round_lr_decay**h.round_index if h.stage == "adapt" else 1.0)
        optimizer = torch.optim.SGD(
            self.net.parameter_groups(lr, h.head_lr_mult), lr=lr, momentum=h.momentum, weight_decay=h.weight_decay
        )
        horizon = max(1.0, h.poly_horizon * float(self.trainer.estimated_stepping_batches))

        def factor(step: int) -> float:
            return max(0.0, 1 - step / horizon) ** h.poly_power

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
