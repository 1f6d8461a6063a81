"""The ACLS LightningModule: the core's calibrated classifier trained with a pluggable loss (ACLS by default)."""

from __future__ import annotations

from torch import Tensor, nn

from acls.losses import ACLSLoss
from cvlab_shared.classification import CalibratedClassifier


class ACLSClassifier(CalibratedClassifier):
    def __init__(
        self,
        num_classes: int = 10,
        backbone: str = "small_cnn",
        in_channels: int = 3,
        pretrained: str | None = None,
        loss: nn.Module | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        n_bins: int = 15,
        official_aece: bool = False,
        temperature_method: str = "nll",
        cpu_threads: int | None = None,
    ) -> None:
        """Image classifier trained with a calibration loss, evaluated before and after temperature scaling.

        Args:
            num_classes: number of classes (must match the datamodule).
            backbone: small_cnn | resnet50 | resnet101 | resnet50_cifar | resnet101_cifar | resnet50_tiny | resnet101_tiny.
            in_channels: input channels (1 for digits).
            pretrained: a weights file for the backbone (nothing is downloaded).
            loss: the training loss, e.g. acls.ACLSLoss, acls.MbLSLoss, acls.LabelSmoothingLoss, acls.FocalLoss,
                acls.AdaptiveFocalLoss, acls.CrossEntropyLoss (default: ACLSLoss(num_classes)).
            lr: SGD learning rate.
            momentum: SGD momentum.
            weight_decay: SGD weight decay.
            nesterov: Nesterov momentum.
            milestones: epochs at which the learning rate is multiplied by lr_gamma.
            lr_gamma: learning-rate factor at each milestone.
            n_bins: bins of ECE / AECE / CECE.
            official_aece: reproduce the official AECE (drops the lowest-confidence sample).
            temperature_method: nll | ece_grid | nll_grid (ece_grid is the official search).
            cpu_threads: torch CPU threads (None keeps torch's default).
        """
        super().__init__(num_classes=num_classes, backbone=backbone, in_channels=in_channels, pretrained=pretrained,
                         lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                         milestones=milestones, lr_gamma=lr_gamma, n_bins=n_bins, official_aece=official_aece,
                         temperature_method=temperature_method, cpu_threads=cpu_threads)
        self.save_hyperparameters(ignore=["loss"])
        self.loss = loss if loss is not None else ACLSLoss(num_classes)

    def training_loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        loss = self.loss(self(x), y)
        return loss, dict(getattr(self.loss, "components", {}))
