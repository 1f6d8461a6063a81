"""Run as a script: a tiny CaCL fit under DDP (2 CPU processes, gloo); each rank saves its memory and cluster state.

The source classifier is unused after the source epochs, hence `ddp_find_unused_parameters_true`.
Used by test_cacl_module.py. Lightning's DDP launcher re-runs this script for the second process.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from cacl.data import CaclDataModule
from cacl.module import CaclModule


class SaveState(pl.Callback):
    """Saves what must agree across ranks at the end of every training epoch."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_epoch_end(self, trainer: pl.Trainer, module: CaclModule) -> None:
        state = {
            "memory": module.memory.features.clone(),
            "weights": module.cd.weights.clone(),
            "clusters": module.num_clusters,
            "order": module.schedule.order if module.schedule else None,
            "val_mAP": float(trainer.callback_metrics.get("val/mAP", -1.0)),
        }
        torch.save(state, self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt")


def tiny(root: Path) -> tuple[CaclModule, CaclDataModule]:
    """The smallest useful CaCL run: 12 identities, 3 target cameras, 1 source epoch then 3 adaptation epochs."""
    model = CaclModule(backbone="tiny", width=8, source_epochs=1, lr=1e-3, k1=10, k2=3, eps=0.7, min_samples=2)
    data = CaclDataModule(
        source_root=str(root / "src"),
        target_root=str(root / "tgt"),
        image_size=(32, 16),
        batch_p=4,
        batch_k=2,
        iters=2,
        synthetic_ids=12,
        synthetic_cams=3,
        synthetic_images_per_cam=2,
    )
    return model, data


if __name__ == "__main__":
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    model, data = tiny(out)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        max_epochs=4,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[SaveState(out)],
        default_root_dir=str(out),
    )
    trainer.fit(model, datamodule=data)
