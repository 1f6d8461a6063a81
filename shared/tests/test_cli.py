import json
from pathlib import Path

import pytest
import yaml

from cvlab_shared.cli import resolve_config_names, resolve_logger, run_cli

from toy import ToyData, ToyModule  # noqa: E402  (tests dir is on sys.path through conftest)


def test_train_fits_then_tests_best_and_saves_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(ToyModule, ToyData, package="cvlab_shared", monitor="val/acc",
                  args=["train", "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--model.width=4"])
    run_dir = Path(cli.trainer.log_dir).resolve()
    assert run_dir.parent == tmp_path / "runs" / "cvlab_shared"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["width"] == 4
    assert (run_dir / "metrics.csv").read_text().count("test/acc") == 1
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and len(ckpts) == 2


def test_print_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_cli(ToyModule, ToyData, package="cvlab_shared", args=["train", "--model.lr=0.5", "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == 0.5
    assert printed["trainer"]["logger"]["class_path"].endswith("CSVLogger")


def test_unknown_config_name_lists_packaged(tmp_path):
    with pytest.raises(SystemExit, match="neither a file nor a packaged config"):
        resolve_config_names(["train", "--config", "nope"], "cvlab_shared")
    existing = tmp_path / "c.yaml"
    existing.write_text("{}")
    assert resolve_config_names(["train", f"--config={existing}"], "cvlab_shared") == ["train", "--config", str(existing)]


def test_logger_wandb_is_offline_by_default(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = resolve_logger(["train", "--logger", "wandb", "--x=1"], "pkg")
    assert "--trainer.logger.offline=true" in out and out[-1] == "--x=1"
    assert resolve_logger(["--logger=csv"], "pkg") == []
    with pytest.raises(SystemExit):
        resolve_logger(["--logger", "tensorboard"], "pkg")
