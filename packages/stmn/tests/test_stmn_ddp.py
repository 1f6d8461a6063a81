"""DDP with two CPU processes (gloo): the memories stay identical on both ranks, each rank evaluates its shard and
the gathered evaluation (every test tracklet once) equals a single-process evaluation of the same weights; the
`stmn train` command itself runs under DDP."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from stmn import STMN

def _sibling(name: str):
    """Import this folder's `name.py` under a package-specific module name (every package's tests folder has its own
    worker scripts with the same file names, and one pytest process runs them all)."""
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _sibling("ddp_fit_worker").tiny


@pytest.mark.slow
def test_two_process_fit_keeps_memories_identical_and_gathers_each_tracklet_once(tmp_path):
    script = Path(__file__).with_name("ddp_fit_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=600)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert set(a["memories"]) >= {"smem.key", "smem.val", "smem.bn.weight", "tmem.key", "tmem.val"}
    for name in a["memories"]:
        torch.testing.assert_close(a["memories"][name], b["memories"][name], rtol=0, atol=0)
    assert a["shard"] + b["shard"] == a["gathered"] == b["gathered"]  # two halves, gathered whole
    assert a["results"] == b["results"]
    # the same weights evaluated by one process give the same metrics
    model, data = tiny(tmp_path)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    data.setup("test")
    model.net = STMN(data.num_classes, backbone="tiny", width=4, seq_len=4)  # setup() keeps a built net
    model.net.load_state_dict(torch.load(tmp_path / "net.pt"))
    trainer.test(model, datamodule=data, verbose=False)
    for protocol in ("rrs", "all"):
        for key, value in a["results"][protocol].items():
            assert model.results[protocol][key] == pytest.approx(value, abs=1e-6)


@pytest.mark.slow
def test_stmn_train_command_under_ddp_prints_once_and_ranks_each_test_tracklet_once(tmp_path):
    """The real `stmn train` with `--trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu`: Lightning's
    launcher re-runs the console script for rank 1; one run folder, the results table printed once (rank 0), and
    each protocol ranked every test tracklet of the set once (`test/*_tracklets` in metrics.csv)."""
    data = tmp_path / "data"
    command = [
        str(Path(sys.executable).with_name("stmn")),
        "train",
        "--model.width=4",
        "--data.image_size=[32,16]",
        "--data.seq_len=4",
        "--data.class_per_batch=4",
        "--data.track_per_class=2",
        "--data.iters=1",
        "--data.synthetic_train_ids=8",
        "--data.synthetic_test_ids=6",
        "--data.synthetic_max_frames=6",
        f"--data.data_root={data}",
        "--trainer.max_epochs=1",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
    ]
    env = {**os.environ, "CVLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("epoch 1/1") for line in lines) == 1
    for row in ("protocol ", "RRS ", "all frames "):
        assert sum(line.startswith(row) for line in lines) == 1
    assert "sync_dist" not in done.stderr
    assert [p.name for p in (tmp_path / "runs/stmn").iterdir()] == ["version_0"]  # rank 1 made no run folder
    rows = list(csv.DictReader(open(tmp_path / "runs/stmn/version_0/metrics.csv")))
    test = [r for r in rows if r.get("test/rrs_tracklets")]
    assert len(test) == 1
    meta = json.loads((data / "MARS/synthetic_meta.json").read_text())
    counts = meta["num_tracklets"]
    for protocol in ("rrs", "all"):
        assert float(test[0][f"test/{protocol}_tracklets"]) == counts["query"] + counts["gallery"]
        assert float(test[0][f"test/{protocol}_queries"]) == counts["query"]
        assert 0 < float(test[0][f"test/{protocol}_mAP"]) <= 1
