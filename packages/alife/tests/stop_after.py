"""A callback the resume test adds to `alife train` (`--trainer.callbacks+=stop_after.StopAfter`)."""

import lightning.pytorch as pl


class StopAfter(pl.Callback):
    """Raises KeyboardInterrupt, as Ctrl-C does, at the start of training epoch `epoch` (its last.ckpt is saved)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt
