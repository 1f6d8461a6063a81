"""Evaluation under DDP counts every test image once: 7 images over 2 gloo processes equal the one-process run."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from dkd.data import DKDDataModule
from dkd.module import DKDModule

WORKER = Path(__file__).with_name("ddp_eval_worker.py")


def test_two_processes_evaluate_every_image_once_and_match_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    worker = runpy.run_path(str(WORKER))  # DATA and the Record callback, without running the script
    DKDDataModule(**worker["DATA"]).prepare_data()  # the synthetic data, written once for both runs
    one = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(tmp_path / "devices1"),
                     callbacks=[worker["Record"](tmp_path, 1)])
    one.test(DKDModule(backbone="resnet18", feature_channels=16), datamodule=DKDDataModule(**worker["DATA"]),
             verbose=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(WORKER), str(tmp_path), "2"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    single = torch.load(tmp_path / "devices1_rank0.pt", weights_only=False)
    ranks = [torch.load(tmp_path / f"devices2_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert single["images"] == 7
    assert [r["images"] for r in ranks] == [4, 3]  # unpadded: torch's DistributedSampler would read 4 + 4
    for rank in ranks:
        assert rank["results"] == single["results"]  # confusion matrices summed over processes: the same IoUs
    for devices in (1, 2):  # no logger: the prediction grid goes to a run folder, not the current directory
        assert (tmp_path / f"devices{devices}" / "runs" / "dkd" / "version_0" / "predictions.png").is_file()
    assert not (tmp_path / "predictions.png").exists()
