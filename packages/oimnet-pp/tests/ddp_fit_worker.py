"""Run as a script: a tiny OIMNet++ fit under DDP (2 CPU processes, gloo); each rank saves its OIM tables and metrics.

Used by test_oimnet_ddp.py. Lightning's DDP launcher re-runs this script for the second process.
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from oimnet_pp.data import PersonSearchDataModule
from oimnet_pp.module import OIMNetModule


class SaveState(pl.Callback):
    """Saves what must agree across ranks after training and after the evaluation."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_epoch_end(self, trainer: pl.Trainer, module: OIMNetModule) -> None:
        loss = module.net.reid_loss
        state = {"lut": loss.lut.clone(), "cq": loss.cq.clone(), "header": int(loss.header_cq)}
        torch.save(state, self.out / f"rank{trainer.global_rank}_train.pt")

    def on_validation_end(self, trainer: pl.Trainer, module: OIMNetModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        torch.save(metrics, self.out / f"rank{trainer.global_rank}_val.pt")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    model = OIMNetModule(
        backbone="tiny",
        width=8,
        embedding_dim=16,
        cq_size=8,
        min_size=192,
        max_size=288,
        anchor_sizes=[[16, 32, 64]],
        aspect_ratios=[[2.5]],
        roi_batch_size=16,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
        optimizer="adam",
        lr=1e-3,
        gallery_size=50,
        score_thresh=0.0,
        det_thresh=0.0,
    )
    data = PersonSearchDataModule(
        data_root=str(out / "data"),
        batch_size=2,
        synthetic_train_images=8,
        synthetic_test_images=5,
        synthetic_train_ids=5,
        synthetic_test_ids=3,
        synthetic_gallery_sizes=(3,),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[SaveState(out)],
        default_root_dir=str(out),
    )
    trainer.fit(model, datamodule=data)
