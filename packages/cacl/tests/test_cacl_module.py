"""The LightningModule end to end: the CLI's default pipeline on a tiny synthetic pair, resume, and DDP state."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cacl.cli import main

TINY = [
    "--model.width=8",
    "--model.source_epochs=1",
    "--model.k1=10",
    "--model.k2=3",
    "--model.eps=0.7",
    "--model.min_samples=2",
    "--data.image_size=[32,16]",
    "--data.batch_p=4",
    "--data.batch_k=2",
    "--data.iters=2",
    "--data.synthetic_ids=12",
    "--data.synthetic_cams=3",
    "--data.synthetic_images_per_cam=2",
    "--trainer.check_val_every_n_epoch=1",
]


def test_train_runs_the_curriculum_and_reports_before_and_after(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["train", *TINY, "--trainer.max_epochs=4"])
    out = capsys.readouterr().out
    assert "MMD camera order" in out and "true camera order" in out
    assert "stage 3/3" in out and "target before adaptation" in out and "after CaCL" in out
    ckpt = torch.load(tmp_path / "runs/cacl/version_0/checkpoints/last.ckpt", weights_only=False)
    state = ckpt["cacl"]
    assert len(state["schedule"]["stages"]) == 3 and sorted(state["schedule"]["order"]) == [0, 1, 2]
    assert 0.0 <= state["source_only"]["mAP"] <= 1.0
    # resume from the last checkpoint for one more epoch: the schedule comes back from the checkpoint
    main(
        [
            "train",
            *TINY,
            "--trainer.max_epochs=5",
            f"--ckpt_path={tmp_path / 'runs/cacl/version_0/checkpoints/last.ckpt'}",
        ]
    )
    resumed = capsys.readouterr().out
    assert "target before adaptation" not in resumed and "stage 3/3" in resumed


def test_no_curriculum_is_one_stage_with_every_camera(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["train", *TINY, "--trainer.max_epochs=3", "--model.curriculum=false", "--model.cd_loss=false"])
    out = capsys.readouterr().out
    assert "stage 1/1 cameras [0, 1, 2]" in out


def test_stage_epochs_that_leave_the_last_stage_no_epoch_are_rejected_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="leaves no epoch for the last of 3 stages"):
        main(["train", *TINY, "--trainer.max_epochs=4", "--model.stage_epochs=2"])
    assert "epoch 1/" not in capsys.readouterr().out  # not even the source epoch ran


def test_max_epochs_below_source_epochs_is_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="max_epochs"):
        main(["train", *TINY, "--model.source_epochs=3", "--trainer.max_epochs=2"])


@pytest.mark.slow
def test_ddp_ranks_hold_the_same_memory_clusters_and_metrics(tmp_path):
    script = Path(__file__).with_name("ddp_fit_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=600)
    for epoch in range(1, 4):
        a = torch.load(tmp_path / f"rank0_epoch{epoch}.pt")
        b = torch.load(tmp_path / f"rank1_epoch{epoch}.pt")
        assert a["clusters"] == b["clusters"] and a["order"] == b["order"] is not None
        torch.testing.assert_close(a["memory"], b["memory"])
        torch.testing.assert_close(a["weights"], b["weights"])
        assert a["val_mAP"] == b["val_mAP"]


@pytest.mark.parametrize(
    "name", ["cacl_resnet50_market2msmt", "cacl_resnet50_msmt2market", "cacl_resnet50_personx2market"]
)
def test_dataset_configs_parse_and_name_the_expected_layout_when_data_is_missing(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["train", "--config", name, "--print_config"])
    printed = capsys.readouterr().out
    assert "backbone: resnet50" in printed and "iters: 400" in printed
    monkeypatch.setattr("sys.argv", ["cacl"])  # LightningCLI warns about pytest's own arguments otherwise
    args = ["train", "--config", name, "--trainer.accelerator=cpu", "--trainer.precision=32"]
    with pytest.raises(SystemExit) as e:  # a paper config never trains ResNet-50 from scratch unasked
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--model.pretrained none" in err[0], err
    with pytest.raises(SystemExit) as e:
        main([*args, "--model.pretrained", "none"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "expected" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_verify_names_a_truncated_image_before_anything_is_built(tmp_path, monkeypatch, capsys):
    from cvlab_shared.data.synthetic_reid import write_synthetic_reid

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["cacl"])
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "market"
    write_synthetic_reid(root, num_train_ids=4, num_test_ids=4, num_cams=2, images_per_cam=1, image_size=(32, 16))
    damaged = sorted(root.rglob("bounding_box_train/*.jpg"))[1]
    damaged.write_bytes(damaged.read_bytes()[:200])
    args = ["train", "--data.target=market1501", f"--data.target_root={root}", "--data.verify=true"]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and damaged.name in err[0] and "truncated" in err[0], err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
