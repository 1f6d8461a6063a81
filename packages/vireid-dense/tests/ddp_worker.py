"""Run as a script: a tiny LbA fit + test under DDP (2 CPU processes, gloo); each rank saves its weights, the
training pairs it drew, and its test metrics. Used by test_vireid_ddp.py; Lightning's DDP launcher re-runs this
script for the second process."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from vireid_dense.data import VIReidDataModule
from vireid_dense.module import LbAModule


class SavePairs(pl.Callback):
    def __init__(self) -> None:
        self.pairs: list[list[int]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        _, _, yv, yt = batch
        self.pairs.append(yv.tolist() + yt.tolist())


def tiny(root: Path) -> tuple[LbAModule, VIReidDataModule]:
    model = LbAModule(method="full", backbone="tiny", width=8, warmup_epochs=1)
    data = VIReidDataModule(
        data_root=None, image_size=(32, 16), num_ids=4, num_pos=2, num_batches=4, num_workers=0,
        synthetic_ids=12, synthetic_images=2, search_trials=1, test_batch_size=7,
    )
    return model, data


if __name__ == "__main__":
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    model, data = tiny(out)
    pairs = SavePairs()
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, use_distributed_sampler=False,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[pairs], default_root_dir=str(out), limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data)
    torch.save(
        {"state": model.net.state_dict(), "results": model.results, "labels": pairs.pairs},
        out / f"rank{trainer.global_rank}.pt",
    )
