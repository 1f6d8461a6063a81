"""A checkpoint rebuilds the loss its model was trained with, for every loss (built in Python or by the CLI)."""

import lightning.pytorch as pl
import pytest
import torch

import acls
from acls.cli import main
from acls.module import ACLSClassifier

LOSSES = [
    acls.ACLSLoss(10, pos_lambda=0.5, neg_lambda=0.2, alpha=0.3, margin=7.0),
    acls.MbLSLoss(margin=6.0, alpha=0.2),
    acls.LabelSmoothingLoss(alpha=0.2),
    acls.FocalLoss(gamma=2.0),
    acls.AdaptiveFocalLoss(gamma=2.0),
    acls.CrossEntropyLoss(),
    None,  # the default: ACLSLoss(num_classes)
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_checkpoint_rebuilds_every_loss(loss, tmp_path):
    torch.manual_seed(0)
    model = ACLSClassifier(num_classes=10, in_channels=1, loss=loss)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = ACLSClassifier.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert type(loaded.loss) is type(model.loss) and vars(loaded.loss) == vars(model.loss)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    assert loaded.training_loss((x, y), 0)[0].item() == model.training_loss((x, y), 0)[0].item()


def test_checkpoint_of_a_cli_run_rebuilds_its_loss(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
             "--trainer.limit_test_batches=1", "--trainer.enable_model_summary=false"]
    main(["train", *short, "--model.loss=acls.MbLSLoss", "--model.loss.margin=6"])
    (checkpoint,) = (tmp_path / "runs" / "acls").glob("version_*/checkpoints/last.ckpt")
    loaded = ACLSClassifier.load_from_checkpoint(checkpoint, weights_only=True)
    assert isinstance(loaded.loss, acls.MbLSLoss) and loaded.loss.margin == 6.0
