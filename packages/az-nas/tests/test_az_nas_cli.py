import json
import math
from pathlib import Path

import pytest

from az_nas.cli import main
from az_nas.search.random_search import sample_archs
from cvlab_shared.reference import reference_path


def test_nb201_search_with_benchmark_writes_results_and_plot(tmp_path, capsys):
    out = tmp_path / "search"
    main(["search", "--num-candidates", "4", "--batch-size", "8", "--resolution", "16", "--seed", "1",
          "--benchmark", str(reference_path("data/nb201/nats_bench.csv")), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert "Kendall tau" in printed and "chosen: |" in printed
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["candidates"]) == 4
    assert payload["best"]["candidate"] == printed.strip().splitlines()[-1].removeprefix("chosen: ")
    assert set(payload["extra"]["benchmark"]["chosen_accuracy"]) == {"cifar10", "cifar100", "ImageNet16-120"}
    assert (out / "results.csv").read_text().count("\n") == 5
    assert (out / "rank_vs_accuracy.png").stat().st_size > 1000


def test_nb201_batched_search_path(tmp_path):
    out = tmp_path / "batched"
    main(["search", "--num-candidates", "3", "--batch", "3", "--batch-size", "4", "--resolution", "16",
          "--out", str(out), "--no-progress"])
    rows = json.loads((out / "results.json").read_text())["candidates"]
    assert [r["candidate"] for r in rows] == sample_archs(3, 0)


@pytest.mark.parametrize("space,key,n", [("mobilenetv2", "blocks", 4), ("mobilenetv2-stages", "stages", 2)])
def test_mobilenetv2_evolution_under_budget(tmp_path, capsys, space, key, n):
    out = tmp_path / "mbv2"
    main(["search", "--space", space, "--num-candidates", str(n), "--batch", "2", "--batch-size", "4",
          "--resolution", "32", "--budget", "450M", "--population", "3", "--out", str(out), "--no-progress"])
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["candidates"]) == n
    for row in payload["candidates"]:
        assert row["complexity"] <= 450e6
        assert json.loads(row["candidate"])[key]
    assert "chosen: {" in capsys.readouterr().out


def test_usage_and_bad_benchmark_path(tmp_path, capsys):
    main([])
    assert "search" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="expected a CSV"):
        main(["search", "--num-candidates", "2", "--batch-size", "4", "--resolution", "16",
              "--benchmark", str(tmp_path / "missing.csv"), "--out", str(tmp_path), "--no-progress"])


@pytest.mark.slow
def test_train_default_config_on_digits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["train", "--trainer.max_epochs=1"])
    metrics = next(Path("runs/az-nas").glob("version_*/metrics.csv")).read_text()
    header, *rows = metrics.splitlines()
    test_acc = [r.split(",")[header.split(",").index("test/acc")] for r in rows]
    assert any(v and float(v) > 0.2 for v in test_acc)  # well above chance (0.1) after one epoch


@pytest.mark.gpu
def test_batched_scoring_on_cuda_matches_shapes_and_is_finite():
    import torch

    from az_nas.search.batched import score_nb201_batch

    records = score_nb201_batch(sample_archs(64, 0), device="cuda")
    assert len(records) == 64
    assert sum(math.isfinite(r["expressivity"]) for r in records) >= 60
    assert torch.cuda.is_available()
