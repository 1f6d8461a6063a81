"""Run as a script: real BPCL adaptation steps (`BPCLModule`, stage 'adapt', paper conventions: memory, label
transfer, calibration, both contrast directions) under DDP with two CPU processes (gloo), on the synthetic pair and
round-0 pseudo labels written by `prepare`. Each rank saves its prototype memory, its network weights and what it
trained on. Lightning's DDP launcher re-runs this script for rank 1. Used by test_bpcl_ddp.py."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from bpcl_uda.cli import predict_dataset
from bpcl_uda.data import BPCLDataModule
from bpcl_uda.module import BPCLModule
from bpcl_uda.pseudo_labels import pseudo_label_dir, write_pseudo_labels

STEPS = 2


def data(root: Path, adapt: bool = True) -> BPCLDataModule:
    """8 source / 8 target / 2 val synthetic images of 32 x 64 (SYNTHIA-like source), 2 + 2 images per process."""
    return BPCLDataModule(
        source="synthia",
        pseudo_label_dir=str(pseudo_label_dir(root, 0)) if adapt else None,
        crop_size=(32, 64),
        scales=(0.8, 1.0, 1.2),
        eval_size=None,
        batch_size=2,
        eval_batch_size=2,
        synthetic_source=8,
        synthetic_target=8,
        synthetic_val=2,
    )


def model(stage: str = "adapt") -> BPCLModule:
    """ResNet-18 DeepLab-v2 from scratch; momentum 0.5 so that two steps move the memory visibly."""
    return BPCLModule(
        stage=stage,
        backbone="resnet18",
        freeze_bn=True,
        lr=0.01,
        prototype_momentum=0.5,
        calibration_momentum=0.5,
        transfer_threshold=0.1,
    )


def prepare(root: Path) -> None:
    """Round-0 pseudo labels from an untrained source-only model (the path `bpcl-uda train` takes between stages)."""
    torch.manual_seed(0)
    net = model("source_only").eval()
    datamodule = data(root, adapt=False)
    dataset = datamodule.target_train_eval_set()
    names = [s.name for s in datamodule.target_train_samples]
    write_pseudo_labels(pseudo_label_dir(root, 0), names, predict_dataset(net, dataset), 19, 0.5, 0.5)


class Record(pl.Callback):
    """Keeps a fingerprint (pixel sum) of every source + target batch this rank trained on."""

    def __init__(self) -> None:
        self.batches: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.batches.append(float(batch["source"][0].sum() + batch["target"][0].sum()))


if __name__ == "__main__":
    root = Path(sys.argv[1])
    pl.seed_everything(0)
    net = model()
    start = {k: v.clone() for k, v in net.net.state_dict().items()}
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=str(root),
    )
    trainer.fit(net, datamodule=data(root))
    state = {
        "memory": {k: v.clone() for k, v in net.memory.state_dict().items()},
        "net": {k: v.clone() for k, v in net.net.state_dict().items()},
        "start": start,
        "batches": record.batches,
        "steps": trainer.global_step,
    }
    torch.save(state, root / f"fit_rank{trainer.global_rank}.pt")
