"""The `stmn` command end to end on a tiny synthetic set: train + both test protocols, `test --ckpt_path`, the
paper configs, and bad data roots failing before a run folder is written."""

from pathlib import Path

import pytest
import torch

from stmn.cli import main
from stmn.data import IdentityBatchSampler

TINY = [
    "--model.width=4",
    "--data.image_size=[32,16]",
    "--data.seq_len=4",
    "--data.class_per_batch=4",
    "--data.track_per_class=2",
    "--data.iters=2",
    "--data.synthetic_train_ids=8",
    "--data.synthetic_test_ids=6",
    "--data.synthetic_max_frames=8",
    "--trainer.check_val_every_n_epoch=1",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_train_prints_both_protocols_and_test_reloads_the_checkpoint(workdir, capsys):
    main(["train", *TINY, "--trainer.max_epochs=2"])
    out = capsys.readouterr().out
    assert "RRS" in out and "all frames" in out and "epoch 2/2" in out
    run = workdir / "runs/stmn/version_0"
    assert (run / "config.yaml").is_file() and (run / "checkpoints/last.ckpt").is_file()
    metrics = (run / "metrics.csv").read_text().splitlines()[0]
    assert "test/rrs_mAP" in metrics and "test/all_rank1" in metrics and "val/mAP" in metrics
    main(["test", *TINY, f"--ckpt_path={run / 'checkpoints/last.ckpt'}"])
    again = capsys.readouterr().out
    assert again.count("RRS") >= 1 and "all frames" in again


def test_ablation_runs_without_memories_and_a_sanity_check_does_not_rank_a_partial_test_set(workdir, capsys):
    main(
        [
            "train",
            *TINY,
            "--trainer.max_epochs=1",
            "--trainer.num_sanity_val_steps=1",
            "--data.test_batch_size=2",
            "--model.spatial_memory=false",
            "--model.temporal_memory=false",
        ]
    )
    assert "all frames" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["stmn_resnet50_mars", "stmn_resnet50_dukev", "stmn_resnet50_lsvid"])
def test_paper_configs_parse_and_missing_data_names_the_layout_before_any_run_folder(name, workdir, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", name, "--print_config"])
    printed = capsys.readouterr().out
    assert "backbone: resnet50" in printed and "lr: 0.0001" in printed and "max_epochs: 200" in printed
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", name, "--trainer.accelerator=cpu", "--model.pretrained=none"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "expected layout" in err[0]
    assert "data/" in err[0]  # the paper config's data_root
    assert not (workdir / "runs").exists()


def test_mars_root_without_info_is_one_clear_error(workdir, capsys):
    (workdir / "MARS" / "bbox_train").mkdir(parents=True)
    (workdir / "MARS" / "bbox_test").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data.dataset=mars", f"--data.data_root={workdir}", "--trainer.accelerator=cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1 and "missing ['info'" in err[0] and str(workdir / "MARS") in err[0]
    assert not (workdir / "runs").exists()


def test_synthetic_data_root_is_never_written_into_a_folder_holding_other_files(workdir, capsys):
    junk = workdir / "photos"
    junk.mkdir()
    (junk / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(SystemExit) as exc:
        main(["train", *TINY, f"--data.data_root={junk}", "--trainer.max_epochs=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1 and str(junk) in err[0] and "expected" in err[0]
    assert [p.name for p in junk.iterdir()] == ["holiday.jpg"] and not (workdir / "runs").exists()


def test_check_data_reads_the_dataset_and_writes_nothing(workdir):
    from stmn.data import StmnDataModule

    spec = dict(synthetic_train_ids=8, synthetic_test_ids=6, synthetic_max_frames=8, image_size=(32, 16))
    written = StmnDataModule(data_root=str(workdir / "set"), **spec)
    written.prepare_data()  # the synthetic set in the real MARS layout
    before = sorted(p for p in workdir.rglob("*"))
    dm = StmnDataModule(dataset="mars", data_root=str(workdir / "set"), **spec)
    dm.check_data("fit")
    assert dm.split is not None and dm.num_classes == 8 and len(dm.split.test) > 0
    assert sorted(p for p in workdir.rglob("*")) == before


def test_lsvid_dataset_reaches_the_core_reader(workdir, capsys):
    """`--data.dataset lsvid` reads the LS-VID release layout (core writer); a missing info_test.mat stops the CLI."""
    from cvlab_shared.data.synthetic_video import write_synthetic_video
    from stmn.data import StmnDataModule

    meta = write_synthetic_video(workdir / "ls", layout="lsvid", num_train_ids=5, num_test_ids=4, max_frames=4,
                                 image_size=(16, 8), seed=1)
    dm = StmnDataModule(dataset="lsvid", data_root=str(workdir / "ls"), image_size=(16, 8))
    dm.check_data("fit")
    assert dm.num_classes == 5 and len(dm.train_tracks) == meta["num_tracklets"]["train"]
    assert len(dm.split.query) == meta["num_tracklets"]["query"]
    assert len(dm.split.gallery) == meta["num_tracklets"]["gallery"]
    (workdir / "ls/LS-VID/test/data/info_test.mat").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data.dataset", "lsvid", "--data.data_root", str(workdir / "ls"), "--trainer.accelerator=cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1 and "info_test.mat" in err[0] and "LS-VID/list_sequence" in err[0]
    assert not (workdir / "runs").exists()


def test_identity_batches_follow_the_official_shape_and_shard_over_ranks(monkeypatch):
    pids = [i // 3 for i in range(30)]  # 10 identities x 3 tracklets
    sampler = IdentityBatchSampler(pids, p=4, k=4, seed=1)
    batches = [list(sampler)[i : i + 16] for i in range(0, len(sampler), 16)]
    assert len(batches) == 2  # one pass: 10 ids -> 2 full groups of 4
    for batch in batches:
        ids = [pids[i] for i in batch]
        assert len(set(ids)) == 4 and all(ids.count(p) == 4 for p in set(ids))
    sampler.set_epoch(1)
    assert list(sampler) != [i for b in batches for i in b]
    import stmn.data as data

    monkeypatch.setattr(data, "rank_and_world", lambda: (1, 2))
    rank1 = IdentityBatchSampler(pids, p=4, k=4, seed=1, iters=3)
    monkeypatch.setattr(data, "rank_and_world", lambda: (0, 2))
    rank0 = IdentityBatchSampler(pids, p=4, k=4, seed=1, iters=3)
    assert len(rank0) == len(rank1) == 3 * 16 and list(rank0) != list(rank1)
