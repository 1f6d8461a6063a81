"""A tiny model and datamodule for exercising the CLI plumbing."""

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ToyModule(pl.LightningModule):
    def __init__(self, width: int = 8, lr: float = 0.1, dropout: float = 0.0, milestones: list[int] | None = None,
                 crash: bool = False) -> None:
        """Linear classifier on 4-d inputs.

        Args:
            width: hidden width.
            lr: learning rate.
            dropout: dropout before the last layer (draws random numbers every step).
            milestones: epochs at which the learning rate is divided by 10.
            crash: raise in the first training step (a run that fails).
        """
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 2))

    def _step(self, batch, stage):
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, sync_dist=True)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)
        return loss

    def training_step(self, batch, _):
        if self.hparams.crash:
            raise RuntimeError("crash requested")
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.milestones:
            return opt
        return [opt], [torch.optim.lr_scheduler.MultiStepLR(opt, self.hparams.milestones, 0.1)]


class ToyData(pl.LightningDataModule):
    def __init__(self, n: int = 64, batch_size: int = 16, shuffle: bool = False) -> None:
        super().__init__()
        self.shuffle = shuffle
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.batch_size = batch_size

    def _loader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=self.shuffle)

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class StopAfter(pl.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C does) at the end of training epoch `epoch` (1-based)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            raise KeyboardInterrupt
