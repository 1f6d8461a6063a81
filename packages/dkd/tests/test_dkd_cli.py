"""`dkd train` runs the steps in order, each from the previous checkpoint, and writes the per-step table."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dkd.cli import main
from dkd.module import DKDModule, pretrained_file

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_model_summary=false",
    "--data.synthetic_train=40",
    "--data.synthetic_val=8",  # every synthetic image holds an object: 8 test images, 4 per process under DDP
    "--data.synthetic_size=32",
    "--data.crop_size=32",
    "--data.batch_size=4",
    "--data.memory_size=4",
]


@pytest.mark.slow
def test_train_all_steps_then_rerun_one_and_test(cache, capsys):
    run = cache / "run"
    main(["train", "--task", "15-5", "--setting", "overlap", "--run_dir", str(run), *TINY])
    out = capsys.readouterr().out
    assert "| step | classes | old | new | all | hIoU |" in out
    for step in (0, 1):
        assert (run / f"step_{step}" / "last.ckpt").exists()
        assert (run / f"step_{step}" / "metrics.csv").exists()
        assert (run / f"step_{step}" / "predictions.png").stat().st_size > 0
    results = [json.loads((run / f"step_{s}" / "results.json").read_text()) for s in (0, 1)]
    assert results[0]["classes"] == list(range(1, 16)) and results[1]["classes"] == list(range(16, 21))
    assert len(results[1]["per_class"]) == 21
    table = (run / "table.csv").read_text().splitlines()
    assert table[0] == "step,classes,old,new,all,hIoU" and table[2].startswith("1,16-20,")

    step0 = torch.load(run / "step_0" / "last.ckpt", weights_only=False)["state_dict"]
    step1 = torch.load(run / "step_1" / "last.ckpt", weights_only=False)["state_dict"]
    assert step0["net.classifier.heads.1.weight"].shape[0] == 15
    assert step1["net.classifier.heads.2.weight"].shape[0] == 5
    assert "net.classifier.heads.2.weight" not in step0

    main(["train", "--task", "15-5", "--run_dir", str(run), *TINY])  # everything done: nothing retrained
    assert "step 1 already done" in capsys.readouterr().out

    main(["train", "--task", "15-5", "--step", "1", "--run_dir", str(run), *TINY])  # rerun step 1 alone
    assert "=== run: step 1/1" in capsys.readouterr().out

    main(["test", "--task", "15-5", "--step", "1", "--run_dir", str(run)])
    single = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 1: old")]
    assert len(single) == 1
    assert (run / "step_1" / "test" / "predictions.png").exists() and (run / "step_1" / "metrics.csv").exists()

    # the same evaluation with 2 CPU processes (gloo): the confusion matrix is summed over processes
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    command = [sys.executable, "-m", "dkd", "test", "--task", "15-5", "--step", "1", "--run_dir", str(run), *ddp]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert single[0] in done.stdout.splitlines()


def test_step_without_previous_checkpoint_fails(cache, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", "15-5", "--step", "1", "--run_dir", str(cache / "empty"), *TINY])
    assert e.value.code == 2 and "checkpoint of step 0" in capsys.readouterr().err


def test_unknown_config_is_one_line_like_every_package(cache, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "packaged config" in err[0] and "default" in err[0]


def test_help_lists_driver_and_lightning_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--task" in out and "--run_dir" in out and "--model.kd" in out and "--data.memory_size" in out


@pytest.mark.parametrize("name", ["dkd_resnet101_voc", "dkd_resnet101_ade", "dkdm_resnet101_voc", "dkdm_resnet101_ade"])
def test_paper_config_refuses_to_start_without_a_choice_of_weights(name, cache, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--config", name, "--run_dir", str(cache / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "--model.pretrained FILE" in err[-1] and "--model.pretrained none" in err[-1]
    assert not (cache / "run" / "step_0" / "last.ckpt").exists()


def test_pretrained_none_trains_from_scratch_and_a_file_is_kept(tmp_path):
    assert pretrained_file("none") is None and pretrained_file("None") is None and pretrained_file(None) is None
    assert pretrained_file("weights.pth") == "weights.pth"
    assert DKDModule(pretrained="none").hparams.pretrained == "none"  # an explicit choice: no error


def test_verify_names_a_truncated_image_before_anything_is_built(cache, capsys):
    from cvlab_shared.data.synthetic_seg import write_synthetic_voc

    voc = write_synthetic_voc(cache / "voc", num_train=6, num_val=3, size=32)
    damaged = sorted((voc / "JPEGImages").glob("*.jpg"))[2]
    damaged.write_bytes(damaged.read_bytes()[:100])
    args = ["train", "--run_dir", str(cache / "run"), "--data.data_root", str(voc), *TINY]
    with pytest.raises(SystemExit) as e:
        main([*args, "--data.verify=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and damaged.name in err[0] and "truncated" in err[0]
    assert not (cache / "run").exists()
