"""The LightningModule of one ALIFE training stage: base (step 0), ALI step (ALIFE-S1), replay (ALIFE-M-S3), or
plain fine-tuning (the forgetting baseline). The network is built in `setup` from the datamodule's task and step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from cvlab_shared.metrics.segmentation import SegmentationMetrics, incremental_step_scores, step_log_names
from cvlab_shared.models.deeplab import DeepLabV3
from cvlab_shared.visualize.segmentation import save_segmentation_grid
from alife.losses import ALILoss, ReplayLoss
from alife.memory import FeatureMemory
from alife.model import build_network, classes_per_step, freeze, init_classifier_like_mib, predict

STAGES = ("base", "step1", "step3", "finetune")
Weight = float | list[float]


def load_step_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights (`net.*`) of an ALIFE stage checkpoint, without the prefix."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def per_step(value: Weight, step: int) -> float:
    """A loss weight given once or per incremental step (list index step - 1, the last entry repeating)."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(value[min(step, len(value)) - 1])


class ALIFEModule(pl.LightningModule):
    """One stage of ALIFE (Oh, Baek, Ham, NeurIPS 2022).

    * `base`: CE (ignore 255) on background + base classes, everything trainable.
    * `step1`: starts from `previous_checkpoint` (the step t-1 model, also the frozen old model), MiB init of the new
      rows, backbone/ASPP BN and dropout frozen; CE (background ignored) + ALI (background pixels) + KD (others).
    * `step3`: starts from `init_checkpoint` (this step's ALIFE-S1), backbone, ASPP and decoder frozen; focal loss on
      labels completed by the old model + ALI + CE on the whole rotated `memory` (ALIFE-M).
    * `finetune`: like step1 without ALI, KD and MiB init, plain CE with background (the forgetting baseline).
    """

    def __init__(
        self,
        stage: str = "base",
        backbone: str = "resnet101",
        output_stride: int = 16,
        feature_channels: int = 256,
        pretrained: str | None = None,
        lr: float = 1e-2,
        incremental_lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        ali: Weight = 1.0,
        kd: Weight = 1.0,
        replay_ali: Weight = 1.0,
        replay_mem: Weight = 1.0,
        mib_init: bool = True,
        epochs: list[int] | None = None,
        replay_epochs: int = 1,
        memory_per_class: int = 1000,
        rotation_epochs: int = 10,
        rotation_lr: float = 1e-2,
        rotation_weight_decay: float = 1e-4,
        rotation_lambda: float = 0.95,
        rotation_temperature: float = 10.0,
        previous_checkpoint: str | None = None,
        init_checkpoint: str | None = None,
        memory: str | None = None,
    ) -> None:
        """
        Args:
            stage: base, step1 (ALI), step3 (feature replay, ALIFE-M) or finetune (no regulariser).
            backbone: resnet101 (paper) or resnet18 (small, for CPU runs).
            output_stride: 16 as in the paper.
            feature_channels: width of ASPP and of the decoder feature kept in memory (paper 256).
            pretrained: ImageNet weights file for the backbone (torchvision names), used by the base stage.
            lr: learning rate of the base stage (official 1e-2, same for every parameter).
            incremental_lr: learning rate of the step1 and step3 stages (official 1e-3).
            momentum: SGD (Nesterov) momentum.
            weight_decay: SGD weight decay.
            poly_power: poly learning-rate decay per iteration.
            ali: lambda_ALI of step1, one value or one per incremental step.
            kd: lambda_KD of step1, one value or one per incremental step.
            replay_ali: lambda_ALI of step3, one value or one per incremental step.
            replay_mem: lambda_MEM of step3, one value or one per incremental step.
            mib_init: MiB initialisation of the new classifier rows at step1 (official MIB_CLS_INIT True).
            epochs: epochs of the base stage and of each step1 (index = step); None = trainer.max_epochs. Read by
                `alife train`.
            replay_epochs: epochs of each step3 (official 1). Read by `alife train`.
            memory_per_class: feature-memory samples per old class (official 1000). Read by `alife train`.
            rotation_epochs: epochs of rotation training (official 10). Read by `alife train`.
            rotation_lr: Adam learning rate of rotation training (official 1e-2).
            rotation_weight_decay: Adam weight decay of rotation training (official 1e-4).
            rotation_lambda: weight of the cosine term in rotation training (VOC 19-1, 15-5: 0.95; 15-1, ADE: 0.99).
            rotation_temperature: softmax temperature of the pixel weights (official 10).
            previous_checkpoint: the step t-1 model (step1, step3, finetune; set by `alife train`).
            init_checkpoint: this step's ALIFE-S1 checkpoint (step3; set by `alife train`).
            memory: this step's rotated feature memory file (step3; set by `alife train`).
        """
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.save_hyperparameters()
        self.net: DeepLabV3 | None = None
        self._old: list[DeepLabV3] = []  # a list keeps the old model out of state_dict and of DDP
        self.test_results: dict[str, Any] = {}

    # -- building ---------------------------------------------------------------------------------------------------
    def build(self, step: int, pretrained: str | None = None) -> DeepLabV3:
        h = self.hparams
        return build_network(classes_per_step(self.task, step), h.backbone, h.output_stride, h.feature_channels,
                             pretrained)

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        datamodule = self.trainer.datamodule
        self.task, self.step_index = datamodule.task, datamodule.step
        h = self.hparams
        if (h.stage == "base") != (self.step_index == 0):
            raise ValueError(f"stage {h.stage!r} does not apply to step {self.step_index} (base is step 0 only)")
        self.net = self.build(self.step_index, h.pretrained if self.step_index == 0 else None)
        old, new = self.task.metric_groups(self.step_index)
        num_classes = self.task.num_outputs(self.step_index)
        self.val_metric = SegmentationMetrics(num_classes, old, new or None, absent="present")
        self.test_metric = SegmentationMetrics(num_classes, old, new or None, absent="present")
        if self.step_index > 0 and stage == "fit":
            self._start_from_checkpoints()
        if h.stage in ("step1", "step3"):
            freeze(self.net, h.stage)

    def _load(self, net: DeepLabV3, path: str | None, what: str, strict: bool) -> None:
        if not path:
            raise ValueError(f"stage {self.hparams.stage} at step {self.step_index} needs {what}; "
                             "`alife train` sets it from the run folder")
        if not Path(path).exists():
            raise FileNotFoundError(f"missing {what}: {path} (`alife train` writes it)")
        missing, unexpected = net.load_state_dict(load_step_weights(path), strict=False)
        new_head = f"classifier.heads.{self.step_index}."
        if unexpected or (missing and (strict or any(not k.startswith(new_head) for k in missing))):
            raise ValueError(f"{path} is not {what} of this task (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def _start_from_checkpoints(self) -> None:
        h = self.hparams
        old = self.build(self.step_index - 1)
        self._load(old, h.previous_checkpoint, f"the step-{self.step_index - 1} model", strict=True)
        self._old = [old.eval().requires_grad_(False)]
        if h.stage == "step3":
            self._load(self.net, h.init_checkpoint, f"the step-{self.step_index} ALIFE-S1 checkpoint", strict=True)
            num_memory = self.task.num_outputs(self.step_index - 1)
            self.memory = FeatureMemory.load(h.memory, num_memory, h.feature_channels, "alife train --memory").features
        else:
            self.net.load_state_dict(old.state_dict(), strict=False)
            if h.stage == "step1" and h.mib_init:
                init_classifier_like_mib(self.net.classifier)
        if h.stage == "step1":
            self.criterion = ALILoss(per_step(h.ali, self.step_index), per_step(h.kd, self.step_index))
        elif h.stage == "step3":
            self.criterion = ReplayLoss(per_step(h.replay_ali, self.step_index), per_step(h.replay_mem, self.step_index))

    def on_fit_start(self) -> None:
        for old in self._old:
            old.to(self.device)
        if self.hparams.stage == "step3":
            self.memory = self.memory.to(self.device)

    def on_train_epoch_start(self) -> None:
        if self.hparams.stage in ("step1", "step3"):
            freeze(self.net, self.hparams.stage)

    # -- steps ------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, label = batch
        logits, _ = self.net(image)
        stage = self.hparams.stage
        if stage in ("base", "finetune"):
            total, parts = F.cross_entropy(logits, label, ignore_index=255), {}
        else:
            with torch.no_grad():
                old_logits, _ = self._old[0](image)
            if stage == "step1":
                total, parts = self.criterion(logits, old_logits, label)
            else:
                classifier = self.net.classifier
                total, parts = self.criterion(logits, old_logits, label, self.memory, classifier.weight(),
                                              classifier.bias())
        self.log("train/loss", total, prog_bar=True, sync_dist=True)
        for name, value in parts.items():
            self.log(f"train/{name}", value, sync_dist=True)
        return total

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metric: SegmentationMetrics) -> torch.Tensor:
        image, label = batch
        pred = predict(self.net(image)[0])
        metric.update(pred, label)
        return pred

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metric)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        pred = self._evaluate(batch, self.test_metric)
        if batch_idx == 0:
            log_dir = self.trainer.log_dir  # a broadcast: every process must ask
            if self.trainer.is_global_zero and log_dir:
                title = f"step {self.step_index} ({self.hparams.stage}): image | truth | ALIFE"
                save_segmentation_grid(Path(log_dir) / "predictions.png", batch[0], batch[1], pred, title=title)

    def _log_metric(self, metric: SegmentationMetrics, stage: str) -> dict[str, Any]:
        """old (background + base classes), new (classes of steps 1..t), all mIoU and hIoU in %, Detectron2-style."""
        result = incremental_step_scores(metric)
        for name, value in step_log_names(stage, result).items():
            self.log(name, value)
        result["per_class"] = [None if v != v else v for v in result["per_class"]]  # JSON-safe: NaN -> null
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metric(self.test_metric, "test")

    # -- optimisation -----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        lr = h.lr if h.stage == "base" else h.incremental_lr
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=h.momentum, nesterov=True, weight_decay=h.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: (1 - min(i, total - 1) / total) ** h.poly_power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
