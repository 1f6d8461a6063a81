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


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


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
