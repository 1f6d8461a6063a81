"""Run as a script: `python ddp_eval_worker.py OUT DEVICES` evaluates a step-0 DKD model on 7 synthetic test images
with DEVICES CPU processes (gloo) and saves, per rank, the images it read and the gathered results.

Used by test_dkd_ddp_eval.py, which also runs the one-process evaluation in its own process with DATA and Record;
Lightning's DDP launcher re-runs this script for the second process. The network is seeded right before the module
builds it, so every process (and the one-process run) holds the same weights.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from dkd.data import DKDDataModule
from dkd.module import DKDModule

DATA = {"synthetic_train": 8, "synthetic_val": 7, "synthetic_size": 32, "crop_size": 32, "eval_crop_size": None,
        "batch_size": 2, "num_workers": 0}


class Record(pl.Callback):
    def __init__(self, out: Path, devices: int) -> None:
        self.out, self.devices, self.images = out, devices, 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        torch.manual_seed(0)  # runs after the datamodule's setup, right before the module builds its network

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.images += batch[0].shape[0]

    def on_test_end(self, trainer: pl.Trainer, pl_module: DKDModule) -> None:
        result = {"images": self.images, "results": pl_module.test_results}
        torch.save(result, self.out / f"devices{self.devices}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    out, devices = Path(sys.argv[1]), int(sys.argv[2])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out / f"devices{devices}"),
        callbacks=[Record(out, devices)],
    )
    trainer.test(DKDModule(backbone="resnet18", feature_channels=16), datamodule=DKDDataModule(**DATA))
