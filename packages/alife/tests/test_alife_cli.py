"""`alife train` runs every stage in order, saves each artefact, skips finished stages, and fails clearly."""

import json

import pytest
import torch

from alife.cli import main

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_model_summary=false",
    "--model.epochs=null",
    "--model.memory_per_class=3",
    "--model.rotation_epochs=1",
    "--data.synthetic_train=80",
    "--data.synthetic_val=8",
    "--data.synthetic_size=32",
    "--data.crop_size=32",
    "--data.batch_size=4",
]


@pytest.mark.slow
def test_alife_m_all_stages_rerun_and_test(cache, capsys):
    run = cache / "run"
    main(["train", "--task", "15-5", "--memory", "--run_dir", str(run), *TINY])
    out = capsys.readouterr().out
    assert "| step | classes | old | new | all | hIoU | memory_bytes | image_memory_bytes |" in out
    step1 = run / "step_1"
    for artefact in ("step1/last.ckpt", "memory.pt", "rotations.pt", "memory_rotated.pt", "step3/last.ckpt",
                     "last.ckpt", "results.json"):
        assert (step1 / artefact).exists(), artefact
    memory = torch.load(step1 / "memory_rotated.pt", weights_only=True)["features"]
    assert memory.shape == (16, 3, 128)  # background + 15 base classes, 3 samples, 128-d decoder features
    raw = torch.load(step1 / "memory.pt", weights_only=True)["features"]
    torch.testing.assert_close(memory.norm(dim=-1), raw.norm(dim=-1), atol=1e-4, rtol=1e-4)  # rotations keep norms
    results = json.loads((step1 / "results.json").read_text())
    assert results["memory_bytes"] == 16 * 3 * 128 * 4
    assert results["image_memory_bytes"] > results["memory_bytes"]
    assert results["rotation_seconds_per_class"] > 0 and results["extract_seconds_per_class"] > 0
    final = torch.load(step1 / "last.ckpt", weights_only=False)["state_dict"]
    replay = torch.load(step1 / "step3" / "last.ckpt", weights_only=False)["state_dict"]
    ali_step = torch.load(step1 / "step1" / "last.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(final["net.classifier.heads.1.weight"], replay["net.classifier.heads.1.weight"])
    for frozen in ("net.last_conv.0.weight", "net.backbone.conv1.weight"):  # step 3 trains only the classifiers
        assert torch.equal(replay[frozen], ali_step[frozen])
    assert not torch.equal(replay["net.classifier.heads.0.weight"], ali_step["net.classifier.heads.0.weight"])

    main(["train", "--task", "15-5", "--memory", "--run_dir", str(run), *TINY])  # everything done
    out = capsys.readouterr().out
    assert "step 1 already done" in out and "===" not in out

    (step1 / "results.json").unlink()
    (step1 / "step3" / "done.json").unlink()  # an interrupted replay stage: resumed, earlier stages skipped
    main(["train", "--task", "15-5", "--memory", "--run_dir", str(run), *TINY])
    out = capsys.readouterr().out
    assert "step 1 step1: already done" in out and "step 1 memory: already done" in out
    assert "step 1 step3: resuming from" in out

    main(["test", "--task", "15-5", "--memory", "--step", "1", "--run_dir", str(run)])
    assert any(line.startswith("step 1: old") for line in capsys.readouterr().out.splitlines())


def test_unknown_task_is_one_error_line(cache, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", "15-7", *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "15-7" in err[0]


def test_step_without_previous_model_names_the_command(cache, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--task", "15-5", "--step", "1", "--run_dir", str(cache / "empty"), *TINY])
    err = capsys.readouterr().err
    assert "the step-0 model is missing" in err and "alife train --task 15-5 --step 0" in err


def test_memory_of_wrong_feature_size_is_refused(cache, capsys):
    run = cache / "run"
    (run / "step_1" / "step1").mkdir(parents=True)
    (run / "step_0").mkdir()
    (run / "step_0" / "last.ckpt").write_bytes(b"")  # stands for a finished step 0 and ALI step
    (run / "step_1" / "step1" / "done.json").write_text("{}")
    torch.save({"features": torch.zeros(16, 3, 64)}, run / "step_1" / "memory.pt")
    with pytest.raises(SystemExit):
        main(["train", "--task", "15-5", "--memory", "--step", "1", "--run_dir", str(run), *TINY])
    err = capsys.readouterr().err
    assert "64-d features but the model's are 128-d" in err and "alife train --memory" in err


def test_help_lists_driver_and_lightning_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--memory" in out and "--run_dir" in out and "--model.ali" in out and "--model.memory_per_class" in out


@pytest.mark.parametrize(
    "name, step, expected",
    [
        ("alife_resnet101_voc_19-1", 1, (1.0, 1.0, 1.0, 1.0, 5)),
        ("alife_resnet101_voc_15-5", 1, (2.0, 1.0, 1.0, 10.0, 10)),
        ("alife_resnet101_voc_15-1", 2, (5.0, 10.0, 5.0, 20.0, 5)),
        ("alife_resnet101_voc_15-1", 4, (3.0, 10.0, 3.0, 2.0, 5)),
        ("alife_resnet101_ade_100-50", 1, (1.0, 1.0, 0.0, 0.5, 60)),
        ("alife_resnet101_ade_100-10", 4, (1.0, 1.0, 0.0, 0.1, 60)),
        ("alife_resnet101_ade_50-50", 2, (1.0, 20.0, 0.0, 0.5, 60)),
    ],
)
def test_paper_configs_hold_the_released_per_step_values(name, step, expected):
    from alife.cli import config_values
    from alife.module import per_step

    model = config_values(["--config", name])["model"]
    got = tuple(per_step(model[k], step) for k in ("ali", "kd", "replay_ali", "replay_mem"))
    assert got + (model["epochs"][step],) == expected
    assert model["memory_per_class"] == 1000 and model["backbone"] == "resnet101"


def test_wrong_data_layout_fails_before_anything_is_written(cache, capsys):
    junk = cache / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("not VOC")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data.data_root", str(junk), "--run_dir", str(cache / "run"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error:") and "junk" in err[0] and "expected" in err[0], err
    assert not (cache / "run").exists() and not (cache / "cache").exists()


def test_train_ckpt_path_must_be_a_stage_checkpoint(cache, capsys):
    elsewhere = cache / "elsewhere"
    elsewhere.mkdir()
    torch.save({"state_dict": {}}, elsewhere / "last.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--ckpt_path", str(elsewhere / "last.ckpt"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and "elsewhere" in err[0] and "expected a stage checkpoint" in err[0], err
    assert not (cache / "runs").exists()


@pytest.mark.slow
def test_alife_m_replay_stage_interrupted_and_resumed_equals_uninterrupted(cache, capsys, monkeypatch):
    """ALIFE-M's replay stage (after memory extraction and rotation training) stopped after 1 of 2 epochs and resumed
    with --ckpt_path gives exactly the results of an uninterrupted run (CPU)."""
    import signal
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    tiny = [a for a in TINY if not a.startswith(("--trainer.max_epochs", "--model.epochs"))]
    tiny += ["--model.epochs=[1,1]", "--model.replay_epochs=2"]  # StopAfter(epoch=1) fires in the replay stage only
    whole, parts = cache / "whole", cache / "parts"
    main(["train", "--memory", "--run_dir", str(whole), *tiny])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        main(["train", "--memory", "--run_dir", str(parts), *tiny, "--trainer.callbacks+=stop_after.StopAfter",
              "--trainer.callbacks.epoch=1"])
    signal.signal(signal.SIGINT, handler)
    assert (parts / "step_1" / "memory_rotated.pt").exists() and not (parts / "step_1" / "results.json").exists()
    main(["train", "--memory", *tiny, f"--ckpt_path={parts / 'step_1' / 'step3' / 'last.ckpt'}"])
    assert "step 1 step3: resuming from" in capsys.readouterr().out
    timing = ("extract_seconds", "extract_seconds_per_class", "rotation_seconds", "rotation_seconds_per_class")
    for step in (0, 1):
        a, b = (json.loads((run / f"step_{step}" / "results.json").read_text()) for run in (whole, parts))
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
