"""Every package's command, as a user meets it: bad input fails at once with one line, and an interrupted `train`
resumed from last.ckpt ends exactly where an uninterrupted one does (CPU).

Packages are discovered from packages/*/pyproject.toml (their console script), so a new package joins by itself; the
tables below only make its runs cheap or point at its data options (defaults: `--data.data_root`, 2 epochs).
"""

from __future__ import annotations

import csv
import importlib
import json
import signal
import sys
import time
import tomllib
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # reliability_helpers, for --trainer.callbacks+=

MEMBERS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


def command(member: Path):
    """(script name, its main function)."""
    script, target = next(iter(project(member)["scripts"].items()))
    module, _, function = target.partition(":")
    return script, getattr(importlib.import_module(module), function)


IDS = [m.name for m in MEMBERS]

# How a package is pointed at a dataset folder (default: --data.data_root DIR, with the package's default dataset).
DATA_ROOT = {
    "acls": ["--data.dataset=cifar10", "--data.data_root"],
    "rankmixup": ["--data.dataset=cifar10", "--data.data_root"],
    "az-nas": ["--data.dataset=cifar10", "--data.data_root"],
    "cacl": ["--data.target=market1501", "--data.target_root"],
    "dkd": ["--data.data_root"],
    "stmn": ["--data.dataset=mars", "--data.data_root"],
    "alife": ["--data.data_root"],
    "bpcl-uda": ["--data.target_root"],
    "oimnet-pp": ["--data.dataset=cuhk_sysu", "--data.data_root"],  # synthetic sets write to data_root
}

# Small, fast runs for the resume test (default: the package's default config for 2 epochs), and the epoch after
# which the run is interrupted (default 1).
CACL_TINY = [
    "--model.width=8", "--model.source_epochs=1", "--model.k1=10", "--model.k2=3", "--model.eps=0.7",
    "--model.min_samples=2", "--data.image_size=[32,16]", "--data.batch_p=4", "--data.batch_k=2", "--data.iters=2",
    "--data.synthetic_ids=12", "--data.synthetic_cams=3", "--data.synthetic_images_per_cam=2",
    "--trainer.check_val_every_n_epoch=2", "--trainer.max_epochs=4",
]
DKD_TINY = [
    "--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_test_batches=1",
    "--data.synthetic_train=40", "--data.synthetic_val=8", "--data.synthetic_size=32", "--data.crop_size=32",
    "--data.batch_size=4", "--data.memory_size=4",
]
ALIFE_TINY = [  # both steps of 15-5 (base, then ALIFE-S1 from the base model), 2 epochs each
    "--model.epochs=[2,2]", "--model.feature_channels=32", "--trainer.limit_train_batches=2",
    "--trainer.limit_test_batches=1", "--data.synthetic_train=40", "--data.synthetic_val=8",
    "--data.synthetic_size=32", "--data.crop_size=32", "--data.batch_size=4",
]
VIREID_TINY = [
    "--trainer.max_epochs=3", "--model.width=8", "--model.warmup_epochs=1", "--model.milestones=[2]",
    "--data.image_size=[32,16]", "--data.num_ids=4", "--data.num_pos=2", "--data.num_batches=3",
    "--data.synthetic_ids=12", "--data.synthetic_images=2", "--data.search_trials=2",
]
STMN_TINY = [
    "--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=2", "--model.width=8", "--model.lr_step=2",
    "--data.class_per_batch=4", "--data.track_per_class=2", "--data.iters=2", "--data.seq_len=4",
    "--data.synthetic_train_ids=8", "--data.synthetic_test_ids=6", "--data.synthetic_cams=2",
    "--data.synthetic_max_frames=8",
]
BPCL_TINY = [  # source-only 1 epoch, then one self-training round of 2 epochs, interrupted after its first
    "--model.source_only_epochs=1", "--model.rounds=1", "--trainer.max_epochs=2", "--trainer.limit_train_batches=2",
    "--data.synthetic_source=8", "--data.synthetic_target=8", "--data.synthetic_val=4", "--data.batch_size=4",
]
OIMNET_TINY = [
    "--trainer.max_epochs=2", "--model.width=8", "--model.embedding_dim=16", "--model.cq_size=8",
    "--model.roi_batch_size=16", "--model.min_size=192", "--model.max_size=288", "--data.synthetic_train_images=10",
    "--data.synthetic_test_images=6", "--data.synthetic_train_ids=6", "--data.synthetic_test_ids=3",
    "--data.synthetic_gallery_sizes=[3]", "--model.score_thresh=0.0", "--model.det_thresh=0.0",
    "--model.use_gt_boxes=true",  # two tiny epochs detect nothing at 0.5: keep the test metrics away from 0
]
FAST = {
    "acls": ["--trainer.max_epochs=2", "--model.milestones=[1]"],
    "rankmixup": ["--trainer.max_epochs=2", "--model.milestones=[1]"],
    "az-nas": ["--trainer.max_epochs=2"],
    "cacl": CACL_TINY,
    "dkd": DKD_TINY,
    "vireid-dense": VIREID_TINY,
    "stmn": STMN_TINY,
    "alife": ALIFE_TINY,
    "bpcl-uda": BPCL_TINY,
    "oimnet-pp": OIMNET_TINY,
}
STOP_AFTER = {"cacl": 2}
# Multi-step drivers: `--run_dir DIR` (one sub-folder per step), results in DIR/step_N/results.json.
DRIVERS = ("dkd", "alife", "bpcl-uda")


@pytest.fixture()
def user(tmp_path, monkeypatch):
    """A fresh working folder and cache; tracebacks off, no pytest arguments in sys.argv."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("CVLAB_CACHE", str(cache))
    monkeypatch.delenv("CVLAB_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["cmd"])
    return tmp_path


def _truncated_checkpoint(folder: Path) -> Path:
    whole, cut = folder / "whole.ckpt", folder / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "epoch": 1}, whole)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return cut


def _bad_inputs(member: Path, inputs: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, what the error line must contain)."""
    data = DATA_ROOT.get(member.name, ["--data.data_root"])
    empty, junk = inputs / "empty", inputs / "junk"
    empty.mkdir()
    junk.mkdir()
    (junk / "readme.txt").write_text("not a dataset")
    return {
        "missing data root": (["train", *data, str(inputs / "nope")], "nope"),
        "empty data root": (["train", *data, str(empty)], "empty"),
        "wrong layout": (["train", *data, str(junk)], "junk"),
        "missing checkpoint": (["test", "--ckpt_path", str(inputs / "gone.ckpt")], "gone.ckpt"),
        "truncated checkpoint": (["test", "--ckpt_path", str(_truncated_checkpoint(inputs))], "incomplete"),
    }


@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_bad_input_fails_fast_with_one_line_and_writes_nothing(member, user, capsys, monkeypatch):
    script, main = command(member)
    inputs = user / "inputs"
    inputs.mkdir()
    cases = _bad_inputs(member, inputs)

    def no_model(self, *args, **kwargs):
        raise AssertionError("a LightningModule was built before the input was checked")

    monkeypatch.setattr(pl.LightningModule, "__init__", no_model)
    for name, (args, words) in cases.items():
        start = time.perf_counter()
        with pytest.raises(SystemExit) as exc:
            main(args)
        seconds = time.perf_counter() - start
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exc.value.code == 2, (script, name, err)
        assert len(err) == 1 and err[0].startswith("error: "), (script, name, err)
        assert words in err[0], (script, name, err[0])
        if "data root" in name or "layout" in name:
            assert "expected" in err[0], (script, name, err[0])
        assert seconds < 30, (script, name, seconds)
        assert not any((user / "work").iterdir()), (script, name, list((user / "work").rglob("*")))
        assert not (user / "cache").exists(), (script, name)


def _test_metrics(folder: Path) -> dict[str, str]:
    """The test/* values of a finished run (metrics.csv of a LightningCLI run, or dkd's per-step results)."""
    results = sorted(folder.rglob("results.json"))
    if results:
        return {str(p.relative_to(folder)): json.loads(p.read_text()) for p in results}
    (metrics,) = folder.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    return {k: v for row in rows for k, v in row.items() if k.startswith("test") and v != ""}


@pytest.mark.slow
@pytest.mark.parametrize("member", MEMBERS, ids=IDS)
def test_interrupted_and_resumed_train_equals_uninterrupted(member, user, capsys):
    script, main = command(member)
    fast = FAST.get(member.name, ["--trainer.max_epochs=2"])
    stop = STOP_AFTER.get(member.name, 1)
    dkd_like = member.name in DRIVERS
    here = {"whole": user / "work" / "whole", "parts": user / "work" / "parts"}
    folder = (lambda run: ["--run_dir", str(here[run])]) if dkd_like else (lambda run: [f"--trainer.logger.init_args.save_dir={here[run]}"])

    main(["train", *fast, *folder("whole")])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        main(["train", *fast, *folder("parts"), "--trainer.callbacks+=reliability_helpers.StopAfter",
              f"--trainer.callbacks.epoch={stop}"])
    signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C after an interrupt
    (last,) = here["parts"].rglob("last.ckpt")
    folders = sorted(p for p in here["parts"].rglob("*") if p.is_dir())
    main(["train", *fast, *folder("parts"), f"--ckpt_path={last}"])
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert all(len(line) <= 200 for line in epoch_lines), max(epoch_lines, key=len)  # key metrics only on screen
    # synthetic data goes to the cache, runs to their run folders: nothing else lands in the working folder
    assert sorted(p.name for p in (user / "work").iterdir()) == ["parts", "whole"]
    if not dkd_like:  # resumed in the same run folder: no new version_N
        assert [p for p in here["parts"].rglob("version_*") if p.is_dir()] == [p for p in folders if p.name.startswith("version_")]
    whole, parts = _test_metrics(here["whole"]), _test_metrics(here["parts"])
    assert whole and whole == parts


PAPER_CONFIGS = [
    (member, path.stem)
    for member in MEMBERS
    for path in sorted(member.glob("src/*/configs/*.yaml"))
    if "\n  pretrained: required" in path.read_text()
]


@pytest.mark.parametrize("member,config", PAPER_CONFIGS, ids=[f"{m.name}-{c}" for m, c in PAPER_CONFIGS])
def test_paper_config_refuses_to_train_from_scratch_unasked(member, config, user, capsys, monkeypatch):
    """A paper config starts from ImageNet weights: without --model.pretrained FILE (or an explicit `none`) it stops
    with one line before anything is built or written."""
    script, main = command(member)

    def no_model(self, *args, **kwargs):
        raise AssertionError("a LightningModule was built before the input was checked")

    monkeypatch.setattr(pl.LightningModule, "__init__", no_model)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", config])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1, (script, config, err)
    assert "--model.pretrained none" in err[0], (script, config, err[0])
    assert not any((user / "work").iterdir()) and not (user / "cache").exists(), (script, config)
