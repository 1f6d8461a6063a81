"""`rankmixup train/test` on the packaged default (noisy digits): report, run folder, reproducibility, DDP, configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rankmixup.cli import main
from rankmixup.losses import MNDCGLoss
from rankmixup.module import RankMixupClassifier

SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2"]


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "rankmixup").iterdir())


def test_train_prints_report_and_writes_run_folder_reproducibly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["train", *SHORT])
    main(["train", *SHORT])
    out = capsys.readouterr().out
    assert "ECE" in out and "AECE" in out and "CECE" in out and "NLL" in out and "test T=" in out
    first, second = run_dirs(tmp_path)
    for name in ("config.yaml", "metrics.csv", "calibration.json", "reliability.png"):
        assert (first / name).is_file(), name
    assert yaml.safe_load((first / "config.yaml").read_text())["model"]["loss"] == "mrl"
    a, b = (json.loads((d / "calibration.json").read_text()) for d in (first, second))
    assert a["test"] == b["test"] and a["num_test_samples"] == 719
    main(["test", "--ckpt_path", str(first / "checkpoints" / "last.ckpt")])
    assert "test T=" in capsys.readouterr().out


def test_checkpoint_of_a_cli_run_reloads_with_its_loss(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["train", *SHORT, "--trainer.limit_test_batches=1", "--model.loss=mndcg", "--model.num_mixup=3"])
    (run,) = run_dirs(tmp_path)
    loaded = RankMixupClassifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert isinstance(loaded.criterion, MNDCGLoss) and loaded.hparams.num_mixup == 3


@pytest.mark.parametrize("name", ["mrl_resnet50_cifar10", "mndcg_resnet50_cifar10", "mrl_resnet50_tinyimagenet",
                                  "mndcg_resnet50_tinyimagenet"])
def test_packaged_paper_configs(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", name, "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"], config["data"]
    cifar = "cifar10" in name
    assert config["trainer"]["max_epochs"] == (200 if cifar else 100)
    assert model["milestones"] == ([80, 120] if cifar else [40, 60])
    assert model["backbone"] == ("resnet50_cifar" if cifar else "resnet50_tiny")
    assert model["num_mixup"] == (1 if name.startswith("mrl") else 3)
    assert model["mixup_alpha"] == (2.0 if cifar else 1.0) and model["alpha"] == 0.1
    if name.startswith("mrl"):
        assert model["margin"] == (2.0 if cifar else 1.0)
    assert data["batch_size"] == (128 if cifar else 64) and model["cpu_threads"] is None


def test_missing_dataset_names_the_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:  # one `error:` line, exit status 2 (the core's CLI)
        main(["train", "--config", "mrl_resnet50_cifar10", f"--data.data_root={tmp_path}", "--trainer.max_epochs=1"])
    assert e.value.code == 2 and "cifar-10-batches-py" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    script = Path(sys.executable).with_name("rankmixup")  # DDP re-launches this command for rank 1
    cmd = [str(script), "train", "--trainer.strategy=ddp",
           "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.max_epochs=1",
           "--trainer.limit_train_batches=3", "--model.loss=mndcg", "--model.num_mixup=3",
           "--data.val_fraction=0.2"]  # 862 training images: the core's sampler needs a multiple of the 2 processes
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    result = json.loads((run / "calibration.json").read_text())
    assert result["num_test_samples"] == 719  # every test sample, gathered over both processes exactly once
