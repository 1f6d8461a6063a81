"""Run as a script: a tiny STMN fit + test under DDP (2 CPU processes, gloo); each rank saves its memories, the
number of test tracklets it gathered and its test metrics. Lightning's DDP launcher re-runs this script for rank 1.
Used by test_stmn_ddp.py."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from stmn.data import StmnDataModule
from stmn.module import StmnModule


def tiny(root: Path) -> tuple[StmnModule, StmnDataModule]:
    """8 training identities, 6 test identities, tracklets of 1-8 frames at 32 x 16, S = 4."""
    model = StmnModule(backbone="tiny", width=4, lr=1e-3, lr_step=0)
    data = StmnDataModule(
        data_root=str(root / "data"),
        image_size=(32, 16),
        seq_len=4,
        class_per_batch=4,
        track_per_class=2,
        iters=2,
        test_batch_size=5,
        synthetic_train_ids=8,
        synthetic_test_ids=6,
        synthetic_max_frames=8,
    )
    return model, data


class Gathered(StmnModule):
    """Records how many features each evaluation gathered (the module raises unless it is each tracklet once)."""

    def evaluate_features(self, protocol: str) -> dict[str, float]:
        out = super().evaluate_features(protocol)
        self.gathered = len(self.trainer.datamodule.split.test)
        return out


if __name__ == "__main__":
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    model, data = tiny(out)
    model = Gathered(**model.hparams)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(out),
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    net = model.net
    state = {
        "memories": {k: v.detach().clone() for k, v in net.state_dict().items() if k.startswith(("smem", "tmem"))},
        "results": model.results,
        "gathered": model.gathered,
        "shard": len(data.test_dataloader()[0].dataset),
    }
    torch.save(state, out / f"rank{trainer.global_rank}.pt")
    if trainer.global_rank == 0:
        torch.save(net.state_dict(), out / "net.pt")
