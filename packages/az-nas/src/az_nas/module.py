"""LightningModule that trains a searched architecture (NB201 cell or MobileNetV2 genome) as a classifier."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from az_nas.spaces import mobilenetv2, mobilenetv2_stages
from az_nas.spaces.nb201 import NB201Network

# The best CIFAR-10 cell of NAS-Bench-201 (index 13714, 94.37 %).
DEFAULT_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def build_network(space: str, arch: str, num_classes: int, in_channels: int, channels: int, cells_per_stage: int):
    """The network of `arch` in `space` ("nb201": arch string; "mobilenetv2": genome JSON from `az-nas search`)."""
    if space == "nb201":
        return NB201Network(arch, channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                            in_channels=in_channels)
    if space in ("mobilenetv2", "mobilenetv2-stages"):
        mod = mobilenetv2 if space == "mobilenetv2" else mobilenetv2_stages
        return mod.MBV2Network(mod.MBV2Genome.from_json(arch), num_classes=num_classes, in_channels=in_channels)
    raise ValueError(f"unknown space {space!r}; expected nb201, mobilenetv2 or mobilenetv2-stages")


class NASClassifier(pl.LightningModule):
    """Cross-entropy training with SGD (Nesterov) and a cosine schedule, the NAS-Bench-201 recipe."""

    def __init__(
        self,
        arch: str = DEFAULT_ARCH,
        space: str = "nb201",
        num_classes: int = 10,
        in_channels: int = 3,
        channels: int = 16,
        cells_per_stage: int = 5,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        """Args:
            arch: NB201 arch string, or a MobileNetV2 genome as JSON (printed by `az-nas search --space mobilenetv2`).
            space: nb201 | mobilenetv2 (the official space) | mobilenetv2-stages (our simpler genome).
            num_classes / in_channels: classifier size and input channels (1 for digits).
            channels / cells_per_stage: NB201 macro network size (16 and 5 in the benchmark).
            lr / momentum / weight_decay: SGD settings (cosine decay over the trainer's max_epochs).
        """
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(space, arch, num_classes, in_channels, channels, cells_per_stage)
        self.criterion = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{prefix}/loss", self.criterion(logits, y), sync_dist=True, add_dataloader_idx=False)
        self.log(f"{prefix}/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, sync_dist=True,
                 add_dataloader_idx=False)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, ("val", "test")[dataloader_idx] if dataloader_idx < 2 else f"test{dataloader_idx}")

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                                    weight_decay=self.hparams.weight_decay, nesterov=True)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
