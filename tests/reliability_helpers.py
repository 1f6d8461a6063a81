"""Callbacks the workspace reliability tests add to a package's `train` (`--trainer.callbacks+=reliability_helpers.X`)."""

from __future__ import annotations

import lightning.pytorch as pl


class StopAfter(pl.Callback):
    """Raises KeyboardInterrupt, as Ctrl-C does, once `epoch` training epochs are done (and their last.ckpt saved)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt
