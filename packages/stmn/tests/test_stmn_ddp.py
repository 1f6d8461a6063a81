"""DDP with two CPU processes (gloo): the memories stay identical on both ranks, each rank evaluates its shard and
the gathered evaluation (every test tracklet once) equals a single-process evaluation of the same weights."""

import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from stmn import STMN

sys.path.insert(0, str(Path(__file__).parent))
from ddp_fit_worker import tiny  # noqa: E402


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
