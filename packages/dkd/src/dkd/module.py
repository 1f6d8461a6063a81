"""The LightningModule of one DKD learning step: DeepLabV3 + DKD loss, the previous step's model as teacher."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from cvlab_shared.metrics.segmentation import SegmentationMetrics, incremental_step_scores, step_log_names
from cvlab_shared.models.deeplab import DeepLabV3
from cvlab_shared.runs import output_folder
from cvlab_shared.visualize.segmentation import save_segmentation_grid
from dkd.incremental import freeze_bn_and_dropout, init_novel_classifier, parameter_groups, predict
from dkd.losses import DKDLoss, TeacherOutputs


PRETRAINED_REQUIRED = "required"  # the paper configs' value: the user must name a weights file or say "none"


def pretrained_file(pretrained: str | None) -> str | None:
    """The weights file to load at step 0: None for no value or an explicit "none" (train from scratch).

    The paper configs ship `pretrained: required`, so forgetting `--model.pretrained` cannot silently train
    ResNet-101 from scratch: the run stops with one `error:` line (exit status 2) before anything is built.
    """
    if pretrained == PRETRAINED_REQUIRED:
        print("error: this paper config starts step 0 from ImageNet weights: pass --model.pretrained FILE (torchvision "
              "resnet101-63fe2227.pth), or --model.pretrained none to train from scratch", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if pretrained is None or pretrained.lower() == "none":
        return None
    return pretrained


def classes_per_step(task, step: int) -> list[int]:
    """Classifier groups of the step-t model: the auxiliary classifier, then the classes of steps 0..t."""
    return [1] + [len(task.new_classes(s)) for s in range(step + 1)]


def load_step_weights(path: str) -> dict[str, torch.Tensor]:
    """The network weights (`net.*`) of a DKD step checkpoint, without the prefix."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


class DKDModule(pl.LightningModule):
    """One step of DKD (Baek et al., NeurIPS 2022). The network is built in `setup` from the datamodule's task/step.

    At step t >= 1 the step t-1 checkpoint (`previous_checkpoint`) initialises the network and is the frozen
    teacher; the new classifier rows copy the auxiliary classifier (if `ac` > 0, as officially), BN and dropout
    are frozen and the official per-group learning rates apply. Setting kd = dkd_pos = dkd_neg = 0 gives
    fine-tuning without distillation (the forgetting baseline).
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        output_stride: int = 16,
        feature_channels: int = 256,
        pretrained: str | None = None,
        backbone_bn_momentum: float = 0.01,
        lr: float = 1e-3,
        incremental_lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        warmup_fraction: float = 0.0,
        mbce: float = 1.0,
        kd: float = 5.0,
        dkd_pos: float = 5.0,
        dkd_neg: float = 5.0,
        ac: float = 1.0,
        base_pos_weight: float = 2.0,
        pos_weight: float = 1.0,
        freeze_bn: bool = True,
        previous_checkpoint: str | None = None,
    ) -> None:
        """
        Args:
            backbone: resnet101 (paper) or resnet18 (small, for CPU runs).
            output_stride: 16 as in the paper.
            feature_channels: width of ASPP and of the penultimate feature (paper 256).
            pretrained: ImageNet weights file for the backbone (torchvision names), used at step 0; None or "none"
                trains from scratch; "required" (the paper configs) stops with an error asking for one of the two.
            backbone_bn_momentum: BN momentum in the backbone (official 0.01).
            lr: backbone learning rate at step 0 (VOC 1e-3, ADE 2.5e-3); heads get 10x.
            incremental_lr: the same for steps >= 1 (VOC 1e-4, ADE 2.5e-4).
            momentum: SGD (Nesterov) momentum.
            weight_decay: at step 0 everywhere; at steps >= 1 only on the new classifier.
            poly_power: poly learning-rate decay per iteration.
            warmup_fraction: linear warm-up share of iterations from factor 0.001 (official ADE 0.2, VOC 0).
            mbce: weight of the mBCE on current classes.
            kd: weight of KD on old-class logits.
            dkd_pos: weight of KD on positive-reasoning scores.
            dkd_neg: weight of KD on negative-reasoning scores.
            ac: weight of the auxiliary-classifier loss (> 0 also enables the novel-classifier init).
            base_pos_weight: mBCE pos_weight at step 0 (VOC 2, ADE 35).
            pos_weight: mBCE pos_weight at steps >= 1 (VOC 1, ADE 35).
            freeze_bn: freeze BN statistics/affine and dropout at steps >= 1 (official --freeze_bn).
            previous_checkpoint: the step t-1 checkpoint (required at steps >= 1 when training).
        """
        super().__init__()
        pretrained_file(pretrained)  # refuse to start on a paper config without a choice of weights
        self.save_hyperparameters()
        self.net: DeepLabV3 | None = None
        self._teacher: list[DeepLabV3] = []  # a list keeps the teacher out of state_dict and of DDP
        self.test_results: dict[str, Any] = {}

    # -- building ---------------------------------------------------------------------------------------------------
    def _build(self, groups: list[int], pretrained: str | None = None) -> DeepLabV3:
        h = self.hparams
        net = DeepLabV3(
            groups,
            backbone=h.backbone,
            output_stride=h.output_stride,
            feature_channels=h.feature_channels,
            backbone_bn_momentum=h.backbone_bn_momentum,
            detach_groups=[0],
            pretrained=pretrained,
        )
        for head in net.classifier.heads:  # official classifier init
            nn.init.kaiming_normal_(head.weight)
        return net

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        datamodule = self.trainer.datamodule
        self.task, self.step_index = datamodule.task, datamodule.step
        self.num_old = len(self.task.old_classes(self.step_index))
        h = self.hparams
        weights = pretrained_file(h.pretrained) if self.step_index == 0 else None
        self.net = self._build(classes_per_step(self.task, self.step_index), weights)
        old, new = self.task.metric_groups(self.step_index)
        num_classes = self.task.num_outputs(self.step_index)
        self.val_metric = SegmentationMetrics(num_classes, old, new or None)
        self.test_metric = SegmentationMetrics(num_classes, old, new or None)
        self.criterion = DKDLoss(
            h.mbce, h.kd, h.dkd_pos, h.dkd_neg, h.ac, h.base_pos_weight if self.step_index == 0 else h.pos_weight
        )
        if self.step_index > 0 and stage == "fit":
            self._start_from_previous_step()
        if self.step_index > 0 and h.freeze_bn:
            freeze_bn_and_dropout(self.net)

    def _start_from_previous_step(self) -> None:
        h = self.hparams
        if not h.previous_checkpoint:
            raise ValueError(f"step {self.step_index} needs the checkpoint of step {self.step_index - 1}: "
                             "set model.previous_checkpoint (dkd train does this for you)")
        weights = load_step_weights(h.previous_checkpoint)
        missing, unexpected = self.net.load_state_dict(weights, strict=False)
        new_head = f"classifier.heads.{self.step_index + 1}."
        if unexpected or any(not k.startswith(new_head) for k in missing):
            raise ValueError(f"{h.previous_checkpoint} is not a step-{self.step_index - 1} checkpoint of this task "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if h.ac > 0:
            init_novel_classifier(self.net.classifier)
        if h.kd or h.dkd_pos or h.dkd_neg:
            teacher = self._build(classes_per_step(self.task, self.step_index - 1))
            teacher.load_state_dict(weights)
            self._teacher = [teacher.eval().requires_grad_(False)]

    def on_fit_start(self) -> None:
        for teacher in self._teacher:
            teacher.to(self.device)

    def on_train_epoch_start(self) -> None:
        if self.step_index > 0 and self.hparams.freeze_bn:
            freeze_bn_and_dropout(self.net)

    # -- steps ------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, label = batch
        logits, feature = self.net(image)
        teacher = None
        if self._teacher:
            with torch.no_grad():
                old_logits, old_feature = self._teacher[0](image)
            teacher = TeacherOutputs(old_logits, old_feature, self._teacher[0].classifier.weight()[1:])
        weight = self.net.classifier.weight()[1:]
        total, parts = self.criterion(logits, label, self.num_old, feature, weight, teacher)
        self.log("train/loss", total, prog_bar=True, sync_dist=True)
        for name, value in parts.items():
            self.log(f"train/{name}", value, sync_dist=True)
        return total

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metric: SegmentationMetrics) -> torch.Tensor:
        image, label = batch
        logits, _ = self.net(image)
        pred = predict(logits)
        metric.update(pred, label)
        return pred

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metric)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        pred = self._evaluate(batch, self.test_metric)
        if batch_idx == 0:
            folder = output_folder(self.trainer, "dkd")  # a broadcast: every process must ask
            if self.trainer.is_global_zero:
                title = f"step {self.step_index}: image | truth | DKD"
                save_segmentation_grid(folder / "predictions.png", batch[0], batch[1], pred, title=title)

    def _log_metric(self, metric: SegmentationMetrics, stage: str) -> dict[str, Any]:
        """old (class 0 + base classes), new (classes of steps 1..t), all mIoU and hIoU in %; at step 0 all = old."""
        result = incremental_step_scores(metric)
        for name, value in step_log_names(stage, result).items():
            self.log(name, value)
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metric(self.test_metric, "test")

    # -- optimisation -----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        lr = h.lr if self.step_index == 0 else h.incremental_lr
        groups = parameter_groups(self.net, self.step_index, lr, h.weight_decay)
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=h.momentum, nesterov=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(h.warmup_fraction * total)

        def factor(iteration: int) -> float:
            poly = (1 - min(iteration, total - 1) / total) ** h.poly_power
            if iteration < warmup:
                return poly * (0.001 + (1 - 0.001) * iteration / warmup)
            return poly

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
