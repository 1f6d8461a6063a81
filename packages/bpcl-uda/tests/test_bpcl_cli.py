"""`bpcl-uda train` runs source-only then the rounds (pseudo labels between them), prints the per-class table,
plots, skips finished stages; `bpcl-uda test` evaluates; bad inputs end in one error line."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bpcl_uda.cli import main
from bpcl_uda.data import BPCLDataModule
from cvlab_shared.data.checks import InputError
from cvlab_shared.data.synthetic_uda import write_synthetic_uda

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.log_every_n_steps=1",
    "--model.source_only_epochs=1",
    "--data.synthetic_source=8",
    "--data.synthetic_target=8",
    "--data.synthetic_val=4",
    "--data.batch_size=4",
]


@pytest.mark.slow
def test_train_rounds_table_plot_rerun_and_test(cache, capsys):
    run = cache / "run"
    main(["train", "--rounds", "1", "--run_dir", str(run), "--plot", *TINY])
    out = capsys.readouterr().out
    assert "| class | source_only | round_0 |" in out and "| **mIoU16** |" in out
    assert "| terrain (not in SYNTHIA) |" in out
    for stage in ("source_only", "round_0"):
        assert (run / stage / "best.ckpt").exists() and (run / stage / "metrics.csv").exists()
        assert not (run / stage / "last.ckpt").exists()  # only an unfinished stage keeps its resume point
        results = json.loads((run / stage / "results.json").read_text())
        assert set(results) == {"mIoU19", "mIoU16", "mIoU13", "per_class"} and len(results["per_class"]) == 19
    labels = sorted((run / "round_0" / "pseudo_labels").rglob("*.png"))
    assert len(labels) == 8
    values = set(np.unique(np.concatenate([np.array(Image.open(p)).ravel() for p in labels])).tolist())
    assert values <= set(range(19)) | {255} and not values & {9, 14, 16}  # SYNTHIA: never pseudo-labelled
    assert (run / "predictions.png").stat().st_size > 0 and (run / "table.md").exists()
    header = (run / "round_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/t2s" in header and "train/s2t" in header and "train/pseudo_agree" in header

    main(["train", "--rounds", "1", "--run_dir", str(run), *TINY])
    assert "round_0 already done" in capsys.readouterr().out

    main(
        [
            "test",
            "--run_dir",
            str(run),
            "--data.synthetic_source=8",
            "--data.synthetic_target=8",
            "--data.synthetic_val=4",
        ]
    )
    assert "| class | round_0 |" in capsys.readouterr().out


def test_round_without_previous_round_fails(cache, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--round", "1", "--run_dir", str(cache / "empty"), *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: round 1 needs the pseudo labels of the round_0 model")


def test_bad_inputs_are_one_error_line(cache, capsys):
    root = write_synthetic_uda(cache / "data", 4, 4, 2, height=16, width=32)
    no_gtfine = cache / "city"
    shutil.copytree(root / "cityscapes" / "leftImg8bit", no_gtfine / "leftImg8bit")
    synthia = root / "synthia" / "RAND_CITYSCAPES"
    cases = [
        ([f"--data.source_root={synthia}", f"--data.target_root={no_gtfine}"], "no gtFine/train under"),
        (
            [
                f"--data.source_root={synthia}",
                f"--data.target_root={root / 'cityscapes'}",
                "--data.synthia_labels=GT/synthia_mapped_to_cityscapes",
            ],
            "missing",
        ),
    ]
    (synthia / "GT" / "synthia_mapped_to_cityscapes").mkdir()
    for label in (synthia / "GT" / "LABELS").iterdir():
        shutil.copy(label, synthia / "GT" / "synthia_mapped_to_cityscapes" / label.name)
    cases[1] = (cases[1][0], "a 16-bit colour PNG in GT/synthia_mapped_to_cityscapes")
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--run_dir", str(cache / "bad"), *args])
        assert exit_info.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and message in err[0]
    assert not (cache / "bad" / "source_only").exists()  # checked before any training


def test_ckpt_path_must_be_the_last_checkpoint_of_an_unfinished_stage(cache, capsys):
    for stage, finished, words in (("other", False, "expected a stage checkpoint"), ("source_only", True, "is finished")):
        folder = cache / "run" / stage
        folder.mkdir(parents=True)
        torch.save({"epoch": 0}, folder / "last.ckpt")
        if finished:
            (folder / "results.json").write_text("{}")
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--ckpt_path", str(folder / "last.ckpt"), *TINY])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --ckpt_path") and words in err[0], err
    assert not (cache / "cache").exists() and not (cache / "runs").exists()


def test_check_data_names_the_root_and_layout_and_writes_nothing(cache):
    junk = cache / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("not cityscapes")
    for root, words in ((cache / "nope", "does not exist"), (cache / "empty", "is empty"), (junk, "junk")):
        if root.name == "empty":
            root.mkdir()
        with pytest.raises((InputError, FileNotFoundError)) as error:
            BPCLDataModule(target_root=str(root)).check_data("fit")
        assert words in str(error.value) and "expected" in str(error.value)
    BPCLDataModule().check_data("fit")  # synthetic default: nothing to check, nothing written yet
    assert not (cache / "cache").exists()


def test_help_lists_driver_and_lightning_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--rounds" in out and "--plot" in out and "--model.lambda_t2s" in out and "--data.pseudo_label_dir" in out
