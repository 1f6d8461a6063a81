import json
from pathlib import Path

import pytest
import yaml

from cvlab_shared.cli import resolve_config_names, resolve_logger, run_cli
from cvlab_shared.data.checks import InputError

from toy import ToyData, ToyModule  # noqa: E402  (tests dir is on sys.path through conftest)


def test_train_fits_then_tests_best_and_saves_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(ToyModule, ToyData, package="cvlab_shared", monitor="val/acc",
                  args=["train", "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--model.width=4"])
    run_dir = Path(cli.trainer.log_dir).resolve()
    assert run_dir.parent == tmp_path / "runs" / "cvlab-shared"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["width"] == 4
    assert (run_dir / "metrics.csv").read_text().count("test/acc") == 1
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and len(ckpts) == 2
    out = capsys.readouterr()
    # one results line (the toy module prints none of its own), no Lightning table, no promotional tip
    assert out.out.count("test: test/acc=") == 1 and "DataLoader" not in out.out and "Tip" not in out.out + out.err


def test_print_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_cli(ToyModule, ToyData, package="cvlab_shared", args=["train", "--model.lr=0.5", "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == 0.5
    assert printed["trainer"]["logger"]["class_path"].endswith("CSVLogger")


def test_unknown_config_name_lists_packaged(tmp_path):
    with pytest.raises(InputError, match="neither a file nor a packaged config"):
        resolve_config_names(["train", "--config", "nope"], "cvlab_shared")
    existing = tmp_path / "c.yaml"
    existing.write_text("{}")
    assert resolve_config_names(["train", f"--config={existing}"], "cvlab_shared") == ["train", "--config", str(existing)]


def test_logger_wandb_is_offline_by_default(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = resolve_logger(["train", "--logger", "wandb", "--x=1"], "pkg")
    assert "--trainer.logger.offline=true" in out and out[-1] == "--x=1"
    assert resolve_logger(["--logger=csv"], "pkg") == []
    with pytest.raises(InputError):
        resolve_logger(["--logger", "tensorboard"], "pkg")


def _final_weights(cli):
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    """Ctrl-C after epoch 2 of 4, resume from last.ckpt: same weights and test metrics, same run folder, one
    metrics.csv with every epoch (dropout, shuffling and an LR milestone make the run depend on the saved state)."""
    import signal

    import torch

    monkeypatch.chdir(tmp_path)
    common = ["--trainer.max_epochs=4", "--trainer.accelerator=cpu", "--model.dropout=0.5", "--model.milestones=[3]",
              "--data.shuffle=true", "--trainer.log_every_n_steps=1"]
    full = run_cli(ToyModule, ToyData, package="cvlab_shared", monitor="val/acc", args=["train", *common])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        run_cli(ToyModule, ToyData, package="cvlab_shared", monitor="val/acc",
                args=["train", *common, "--trainer.callbacks+=toy.StopAfter", "--trainer.callbacks.epoch=2"])
    signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after an interrupt
    run = tmp_path / "runs" / "cvlab-shared" / "version_1"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    resumed = run_cli(ToyModule, ToyData, package="cvlab_shared", monitor="val/acc",
                      args=["train", *common, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    # the epochs this process ran, once each, with real durations (no line for the restored epoch's end)
    assert [line.split()[1] for line in lines] == ["2/4", "3/4", "4/4"], lines
    assert all(float(line.split()[2].strip("(s)")) < 60 for line in lines), lines
    assert Path(resumed.trainer.log_dir).resolve() == run.resolve()
    assert not (tmp_path / "runs" / "cvlab-shared" / "version_2").exists()
    a, b = _final_weights(full), _final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    test_a = full.trainer.callback_metrics["test/acc"]
    assert torch.equal(test_a, resumed.trainer.callback_metrics["test/acc"])
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    epochs = sorted({int(float(r.split(",")[header.index("epoch")])) for r in lines[1:] if r.split(",")[header.index("val/acc")]})
    assert epochs == [0, 1, 2, 3]


def test_input_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CVLAB_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["prog"])  # LightningCLI warns about pytest's own arguments otherwise
    good = torch_save_checkpoint(tmp_path / "good.ckpt")
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {
        "missing": (["test", "--ckpt_path", str(tmp_path / "nope.ckpt")], "does not exist"),
        "truncated": (["test", "--ckpt_path", str(truncated)], "incomplete"),
        "forever": (["train", "--trainer.max_epochs=-1"], "trains forever"),
        "config": (["train", "--config", "nope"], "packaged config"),
    }
    for name, (args, words) in cases.items():
        with pytest.raises(SystemExit) as e:
            run_cli(ToyModule, ToyData, package="cvlab_shared", args=args)
        assert e.value.code == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], (name, err)
        assert "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.ckpt", "good.ckpt"]


def torch_save_checkpoint(path):
    import torch

    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    return path


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="crash requested"):
        run_cli(ToyModule, ToyData, package="cvlab_shared", args=["train", "--model.crash=true"])
    assert not (tmp_path / "runs").exists()


def test_epoch_lines_show_validation_only_when_it_ran(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_cli(ToyModule, ToyData, package="cvlab_shared", monitor="val/acc",
            args=["train", "--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=2"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3 and "val/acc" in lines[1]
    assert "val/acc" not in lines[0] and "val/acc" not in lines[2], lines  # no stale values from epoch 2
    assert all("train/loss" in line for line in lines)


def test_epoch_lines_show_only_metrics_logged_in_that_epoch(tmp_path, monkeypatch, capsys):
    """A metric logged in epoch 1 only (the toy logs train/* in every step) must not reappear in epoch 2."""

    class FirstEpochOnly(ToyModule):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 0:
                self.log("train/first", 1.0)
            return super().training_step(batch, batch_idx)

    monkeypatch.chdir(tmp_path)
    run_cli(FirstEpochOnly, ToyData, package="cvlab_shared", monitor="val/acc", args=["train", "--trainer.max_epochs=2"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert "train/first" in lines[0] and "train/first" not in lines[1], lines


def test_pretrained_required_is_refused_in_train_and_read_as_none_in_test():
    from jsonargparse import Namespace

    from cvlab_shared.cli import check_model_options

    with pytest.raises(InputError, match="--model.pretrained none"):
        check_model_options(Namespace(pretrained="required"), "train")
    model = Namespace(pretrained="required", width=3)
    check_model_options(model, "test")  # the weights come from the checkpoint
    assert model.pretrained is None and model.width == 3
    check_model_options(Namespace(pretrained="none"), "train")  # training from scratch, asked for


def test_load_pretrained_reads_none_as_from_scratch_and_refuses_the_sentinel():
    import torch

    from cvlab_shared.models.weights import load_pretrained

    layer = torch.nn.Linear(2, 2)
    before = layer.weight.clone()
    assert load_pretrained(layer, "none") is layer and torch.equal(layer.weight, before)
    with pytest.raises(ValueError, match="'none' to train from scratch"):
        load_pretrained(layer, "required")
