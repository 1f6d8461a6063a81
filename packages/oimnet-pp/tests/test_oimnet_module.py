"""The CLI end to end on tiny synthetic scenes: train + test, resume, PRW layout + plots, configs, bad input."""

import pytest
import torch

from oimnet_pp.cli import main

TINY = [
    "--model.width=8",
    "--model.embedding_dim=16",
    "--model.cq_size=8",
    "--model.roi_batch_size=16",
    "--data.synthetic_train_images=10",
    "--data.synthetic_test_images=6",
    "--data.synthetic_train_ids=6",
    "--data.synthetic_test_ids=3",
    "--data.synthetic_gallery_sizes=[3]",
]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _last(folder):
    return torch.load(folder / "runs/oimnet-pp/version_0/checkpoints/last.ckpt", weights_only=False)


def test_train_tests_and_checkpoints_carry_the_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["train", *TINY, "--trainer.max_epochs=2", "--model.gallery_curve=true"])
    out = capsys.readouterr().out
    assert "person search (test):" in out and "detection  AP=" in out and "search     mAP=" in out
    assert "gallery     3: mAP=" in out and "gallery    50: mAP=" in out  # the CUHK-SYSU gallery-size curve
    state = _last(tmp_path)["state_dict"]
    assert state["net.reid_loss.lut"].shape == (6, 16) and state["net.reid_loss.cq"].shape == (8, 16)
    assert state["net.reid_loss.lut"].abs().sum() > 0  # the table was filled during training
    assert int(state["net.reid_loss.header_cq"]) >= 0 and "net.norm.running_mean" in state
    # `oimnet-pp test` on the last checkpoint prints the numbers the training run's own test printed
    main(["test", *TINY, "--ckpt_path=runs/oimnet-pp/version_0/checkpoints/last.ckpt"])
    again = capsys.readouterr().out
    for prefix in ("  detection  AP=", "  search     mAP="):
        line = next(x for x in out.splitlines() if x.startswith(prefix))
        assert line in again.splitlines(), (line, again)


def test_resume_after_interruption_gives_the_same_tables(tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    monkeypatch.chdir(straight)
    main(["train", *TINY, "--trainer.max_epochs=2"])
    monkeypatch.chdir(resumed)
    main(["train", *TINY, "--trainer.max_epochs=1"])
    ckpt = resumed / "runs/oimnet-pp/version_0/checkpoints/last.ckpt"
    after_one = torch.load(ckpt, weights_only=False)["state_dict"]["net.reid_loss.lut"]
    main(["train", *TINY, "--trainer.max_epochs=2", f"--ckpt_path={ckpt}"])  # resumes in the same run folder
    a = _last(straight)["state_dict"]
    b = _last(resumed)["state_dict"]
    assert not torch.equal(a["net.reid_loss.lut"], after_one)
    for key in ("net.reid_loss.lut", "net.reid_loss.cq", "net.reid_loss.header_cq", "net.embed.weight"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_prw_layout_cross_camera_and_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "train",
            *TINY,
            "--trainer.max_epochs=1",
            "--data.dataset=synthetic_prw",
            "--model.ignore_cam_id=false",
            "--model.cbgm=true",
            "--plot",
            "--model.plot_queries=2",
        ]
    )
    out = capsys.readouterr().out
    assert "search     mAP=" in out
    plots = sorted((tmp_path / "runs/oimnet-pp").rglob("plots/query_*.png"))
    assert len(plots) == 2


def test_gallery_size_that_the_dataset_lacks_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"TestG\[3, 50\] only"):
        main(["train", *TINY, "--trainer.max_epochs=1", "--model.gallery_size=100"])
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before training, not after it


@pytest.mark.parametrize("variant", ["oimnet", "oimnetplus", "oimnetpp", "oimnetppp"])
@pytest.mark.parametrize("dataset", ["cuhk", "prw"])
def test_paper_configs_hold_the_official_values_and_name_the_layout_when_data_is_missing(
    variant, dataset, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    name = f"{variant}_resnet50_{dataset}"
    with pytest.raises(SystemExit):
        main(["train", "--config", name, "--print_config"])
    printed = capsys.readouterr().out
    assert "backbone: resnet50" in printed and "lr: 0.003" in printed and "batch_size: 5" in printed
    assert "max_epochs: 20" in printed and "- 16" in printed and "gradient_clip_val: 10.0" in printed
    assert f"cq_size: {5000 if dataset == 'cuhk' else 500}" in printed
    # default.yaml (the CPU default) is read before --config: none of its CPU settings may leak into a paper config
    for line in ("optimizer: sgd", "rpn_pre_nms_top_n_train: 12000", "rpn_post_nms_top_n_train: 2000",
                 "rpn_pre_nms_top_n_test: 6000", "rpn_post_nms_top_n_test: 300", "roi_batch_size: 128",
                 "roi_output_size: 14", "min_size: 900", "max_size: 1500", "embedding_dim: 256",
                 "precision: 16-mixed", "deterministic: false"):  # fmt: skip
        assert f"\n  {line}\n" in printed, line
    assert "anchor_sizes:\n  - - 8\n    - 16\n    - 32\n  aspect_ratios:\n  - - 0.5\n    - 1.0\n    - 2.0\n" in printed
    with pytest.raises(SystemExit) as exc:  # checked before any model is built: one `error:` line, exit 2
        main(["train", "--config", name, "--trainer.accelerator=cpu", "--trainer.precision=32", "--model.pretrained=none"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: --data.data_root"), err
    assert "expected layout" in err[0] and ("CUHK-SYSU" if dataset == "cuhk" else "PRW-v16.04.20") in err[0]


def _record_loss_calls(monkeypatch) -> list[tuple[str, torch.dtype, bool]]:
    """Wrap OIMLoss.forward (LOIM inherits it) to record the device, dtype and autocast state it is called under."""
    from oimnet_pp.losses import OIMLoss

    calls, forward = [], OIMLoss.forward

    def recording(self, features, labels, ious=None):
        kind = features.device.type
        calls.append((kind, features.dtype, torch.is_autocast_enabled(kind)))
        return forward(self, features, labels, ious)

    monkeypatch.setattr(OIMLoss, "forward", recording)
    return calls


def _check_float16_tables(folder):
    state = _last(folder)["state_dict"]
    for key in ("net.reid_loss.lut", "net.reid_loss.cq"):
        table = state[key]
        assert table.dtype == torch.float16 and torch.isfinite(table).all() and table.abs().sum() > 0, key


@pytest.mark.parametrize("augment", [False, True], ids=["oimnetpp", "oimnetppp"])
def test_mixed_precision_with_float16_tables_on_cpu(augment, tmp_path, monkeypatch, capsys):
    """The AMP code path on the CPU (bf16 autocast; fp16 autocast is CUDA's): the official fp16 tables train."""
    monkeypatch.chdir(tmp_path)
    calls = _record_loss_calls(monkeypatch)
    args = ["--trainer.precision=bf16-mixed", "--model.table_dtype=float16", f"--model.augment={str(augment).lower()}"]
    main(["train", *TINY, "--trainer.max_epochs=1", *args])
    assert calls and all(autocast for _, _, autocast in calls)
    assert "search     mAP=" in capsys.readouterr().out
    _check_float16_tables(tmp_path)


@pytest.mark.gpu
@pytest.mark.parametrize("augment", [False, True], ids=["oimnetpp", "oimnetppp"])
def test_amp_training_on_cuda_with_float16_tables(augment, tmp_path, monkeypatch, capsys):
    """As the paper configs train: CUDA, `precision=16-mixed` (autocast + grad scaler), the official fp16 tables."""
    assert torch.cuda.is_available(), "--gpu was given but no CUDA device is visible"
    monkeypatch.chdir(tmp_path)
    calls = _record_loss_calls(monkeypatch)
    main(
        [
            "train",
            *TINY,
            "--trainer.max_epochs=2",
            "--trainer.accelerator=gpu",
            "--trainer.devices=1",
            "--trainer.precision=16-mixed",
            "--trainer.deterministic=false",  # as the paper configs: adaptive max pooling's CUDA backward is not
            "--model.table_dtype=float16",
            f"--model.augment={str(augment).lower()}",  # OIMNet+++: ProtoNorm2d in the C5 head
        ]
    )
    training = [c for c in calls if c[2]]
    assert training and all(kind == "cuda" for kind, _, _ in training), calls
    out = capsys.readouterr().out
    assert "detection  AP=" in out and "search     mAP=" in out
    _check_float16_tables(tmp_path)
    metrics = (tmp_path / "runs/oimnet-pp/version_0/metrics.csv").read_text()
    assert "nan" not in metrics.lower() and "inf" not in metrics.lower()
