"""The base classifier end to end on noisy digits: trains, tests with temperature scaling, writes its outputs."""

import json

import lightning.pytorch as pl
import pytest
import torch

from cvlab_shared.classification import CalibratedClassifier
from cvlab_shared.data.classification_datamodule import ClassificationDataModule


def test_fit_and_test_report_before_and_after_temperature(tmp_path, capsys):
    pl.seed_everything(0)
    data = ClassificationDataModule("digits", batch_size=64, val_fraction=0.2, noise=0.5)
    model = CalibratedClassifier(num_classes=10, in_channels=1, lr=0.05, cpu_threads=1)
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=2.0,
    )
    trainer.fit(model, datamodule=data)
    assert trainer.callback_metrics["val/acc"] > 0.3
    trainer.test(model, datamodule=data, verbose=False)
    results = model.test_results
    assert results["num_test_samples"] == 719
    assert results["test"]["acc"] == pytest.approx(results["test_ts"]["acc"])  # scaling keeps the arg-max
    assert results["test_ts"]["nll"] < results["test"]["nll"] + 0.05
    assert 0.05 < results["temperature"] < 20
    folder = tmp_path / "run" / "version_0"
    assert json.loads((folder / "calibration.json").read_text())["test"]["ece"] == results["test"]["ece"]
    assert (folder / "reliability.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "ACC" in out and "AECE" in out and "T=" in out


def test_num_classes_mismatch_is_reported():
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    model = CalibratedClassifier(num_classes=7, in_channels=1)
    with pytest.raises(ValueError, match="num_classes=7 but the data has 10"):
        trainer.fit(model, datamodule=ClassificationDataModule("digits"))
    assert torch.get_num_threads() >= 1


def test_training_loss_receives_the_batch_index():
    seen: list[int] = []

    class Recording(CalibratedClassifier):
        def training_loss(self, batch, batch_idx):
            seen.append(batch_idx)
            return super().training_loss(batch, batch_idx)

    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Recording(num_classes=10, in_channels=1, cpu_threads=1), datamodule=ClassificationDataModule("digits"))
    assert seen == [0, 1, 2]


def test_a_run_without_logger_writes_into_a_run_folder_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, limit_test_batches=2,
                         accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    model, data = CalibratedClassifier(num_classes=10, in_channels=1, cpu_threads=1), ClassificationDataModule("digits")
    trainer.fit(model, datamodule=data)
    for _ in range(2):
        trainer.test(model, datamodule=data, verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    folders = sorted((tmp_path / "runs" / "cvlab_shared").iterdir())
    assert [f.name for f in folders] == ["version_0", "version_1"]
    for folder in folders:
        assert (folder / "calibration.json").is_file() and (folder / "reliability.png").is_file()
