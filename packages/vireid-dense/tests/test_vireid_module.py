"""The network, the losses, the Lightning module through the CLI on tiny synthetic SYSU / RegDB data, the
correspondence plot, the packaged configs and the one-line errors on bad input."""

import pytest
import torch

from vireid_dense.cli import main
from vireid_dense.losses import batch_hard_triplet_loss, lr_factor
from vireid_dense.models import TwoStreamNet
from vireid_dense.module import LbAModule

TINY = [
    "--trainer.max_epochs=2",
    "--trainer.enable_checkpointing=true",
    "--model.width=8",
    "--model.warmup_epochs=1",
    "--data.image_size=[32,16]",
    "--data.num_ids=4",
    "--data.num_pos=2",
    "--data.num_batches=2",
    "--data.synthetic_ids=12",
    "--data.synthetic_images=2",
    "--data.search_trials=2",
]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))


def test_two_stream_shapes_and_modality_stems():
    net = TwoStreamNet(5, backbone="tiny", width=8).eval()
    xv, xt = torch.randn(2, 3, 32, 16), torch.randn(2, 3, 32, 16)
    f3, f4 = net.maps(xv, xt)
    assert f3.shape == (4, 32, 4, 2) and f4.shape == (4, 64, 4, 2)
    out = net.head(f4)
    assert out.logits.shape == (4, 5) and out.features.shape == (4, 64)
    a, b = net.embed(xv, "visible"), net.embed(xv, "infrared")
    assert torch.allclose(a.norm(dim=1), torch.ones(2)) and torch.allclose(a, b)  # stems start as copies
    with torch.no_grad():
        net.stem_infrared[0][0].weight.mul_(-1.0)  # separate parameters: changing one stem changes one path
    assert torch.allclose(net.embed(xv, "visible"), a) and not torch.allclose(net.embed(xv, "infrared"), a)
    with pytest.raises(ValueError, match="modality"):
        net.embed(xv, "thermal")


def test_resnet50_two_stream_layout():
    net = TwoStreamNet(3, backbone="resnet50")
    f3, f4 = net.maps(torch.randn(1, 3, 64, 32), torch.randn(1, 3, 64, 32))
    assert f3.shape[1:] == (1024, 4, 2) and f4.shape[1:] == (2048, 4, 2)  # last stride 1: same size
    assert net.stem_visible[0].weight.data_ptr() != net.stem_infrared[0].weight.data_ptr()


def test_batch_hard_triplet_and_schedule():
    feats = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest positive 1, hardest negative 3 -> relu(1 - 3 + 0.3) = 0 ; close negatives give a loss
    assert float(batch_hard_triplet_loss(feats, labels)) == 0.0
    labels = torch.tensor([0, 1, 0, 1])
    assert float(batch_hard_triplet_loss(feats, labels)) == pytest.approx(3 - 1 + 0.3, abs=1e-5)  # pos at 3, neg at 1
    assert [lr_factor(e) for e in (0, 9, 10, 19, 20, 49, 50, 80)] == pytest.approx(
        [0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_full_and_baseline_losses_and_equal_test_cost():
    torch.manual_seed(0)
    full, base = LbAModule(method="full", backbone="tiny", width=8), LbAModule(method="baseline", backbone="tiny", width=8)
    for m in (full, base):
        m.net = TwoStreamNet(4, "tiny", 8)
        from vireid_dense.cmalign import CMAlign

        m.align3, m.align4 = CMAlign(4, 2), CMAlign(4, 2, seed=1)
    xv, xt = torch.randn(8, 3, 32, 16), torch.randn(8, 3, 32, 16)
    y = torch.arange(4).repeat_interleave(2)
    tf, tb = full.losses(xv, xt, y, y), base.losses(xv, xt, y, y)
    assert set(tf) >= {"id", "tri", "ic", "dt", "loss"} and "dt" not in tb
    expected = tf["id"] + tf["tri"] + tf["ic"] + 0.5 * tf["dt"]
    assert float(tf["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert sum(p.numel() for p in full.parameters()) == sum(p.numel() for p in base.parameters())


def test_default_style_run_on_tiny_sysu_then_test_with_plot(capsys, tmp_path):
    main(["train", *TINY])
    out = capsys.readouterr().out
    assert "all-search" in out and "indoor-search" in out
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    main(["test", *TINY, f"--ckpt_path={ckpt}", "--plot", str(tmp_path / "corr.png"), "--data.gallery_order=official"])
    out = capsys.readouterr().out
    assert (tmp_path / "corr.png").stat().st_size > 1000 and "correspondences" in out and "all-search" in out


def test_official_gallery_order_follows_rand_perm_cam(tmp_path):
    from cvlab_shared.data.vi_reid import VIDatasetError, read_sysu_permutations
    from vireid_dense.data import VIReidDataModule

    kw = dict(image_size=(32, 16), synthetic_ids=12, synthetic_images=2, search_trials=2)
    official, agw = VIReidDataModule(gallery_order="official", **kw), VIReidDataModule(**kw)
    for dm in (official, agw):
        dm.prepare_data()
        dm.setup()
    perms = read_sysu_permutations(official.sysu.root / "exp" / "rand_perm_cam.mat")
    for trial in range(2):
        gallery = official.sysu_gallery("all", trial)
        assert len(gallery) == len(agw.sysu_gallery("all", trial)) > 0
        for r in gallery:  # single-shot: the first index of the trial's row of rand_perm_cam{cam}{id}
            assert r.path == official.sysu.files(r.camid + 1, r.pid)[perms[(r.camid + 1, r.pid)][trial][0] - 1]
    assert any(official.sysu_gallery("all", t) != agw.sysu_gallery("all", t) for t in range(2))
    with pytest.raises(VIDatasetError, match="nothere.mat"):
        VIReidDataModule(gallery_order="official", permutation_file=str(tmp_path / "nothere.mat"), **kw).setup()
    with pytest.raises(VIDatasetError, match="needs a permutation for 11 trials"):
        VIReidDataModule(gallery_order="official", **{**kw, "search_trials": 11}).setup()
    with pytest.raises(ValueError, match="gallery_order"):
        VIReidDataModule(gallery_order="matlab")


def test_regdb_run_both_directions(capsys):
    main(["train", *TINY, "--data.dataset=regdb", "--data.trial=4", "--trainer.max_epochs=1"])
    out = capsys.readouterr().out
    assert "visible->thermal" in out and "thermal->visible" in out


def test_bad_input_gives_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *TINY, f"--data.data_root={tmp_path / 'nothing'}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error:" in err and "exp" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["train", *TINY, "--data.dataset=regdb", "--data.trial=11"])
    assert exc.value.code == 2 and "1..10" in capsys.readouterr().err


@pytest.mark.parametrize("dataset,missing", [("sysu", "SYSU-MM01/exp"), ("regdb", "RegDB/idx/train_visible_1.txt")])
def test_check_data_runs_the_readers_and_writes_nothing(tmp_path, dataset, missing):
    from cvlab_shared.data.vi_reid import VIDatasetError
    from vireid_dense.data import VIReidDataModule

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("not a dataset")
    with pytest.raises(VIDatasetError, match="expected") as exc:
        VIReidDataModule(dataset, data_root=str(junk)).check_data("fit")
    assert str(junk / missing) in str(exc.value)
    VIReidDataModule(dataset).check_data("fit")  # the synthetic default is written later, by prepare_data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk"]


@pytest.mark.parametrize("name,dataset", [("lba_resnet50_sysu", "sysu"), ("lba_resnet50_regdb", "regdb")])
def test_paper_configs_carry_the_official_values(name, dataset, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", name, "--print_config"])
    printed = capsys.readouterr().out
    for text in ("backbone: resnet50", "lw_dt: 0.5", "temperature: 50.0", f"dataset: {dataset}", "max_epochs: 81",
                 "- 288", "- 20", "- 50", "weight_decay: 0.0005"):
        assert text in printed, text


def test_regdb_splits_driver_averages_the_splits(capsys):
    from vireid_dense.cli import regdb_splits

    mean = regdb_splits([*TINY, "--trainer.max_epochs=1"], splits=(1, 2))
    out = capsys.readouterr().out
    assert "mean over RegDB splits [1, 2]" in out and set(mean) >= {"v2t_rank1", "t2v_mAP"}
    assert 0 < mean["v2t_mAP"] <= 1
    with pytest.raises(Exception, match="sets --data.trial itself"):
        regdb_splits(["--data.trial=3"])
