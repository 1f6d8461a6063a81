"""Under DDP the OIM tables are identical on every rank and equal the single-process update of the whole batch."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from oimnet_pp import ProtoNorm


def test_two_gloo_ranks_hold_identical_tables_equal_to_one_process(tmp_path):
    script = Path(__file__).with_name("ddp_oim_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=120)
    spec = importlib.util.spec_from_file_location("ddp_oim_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    feats, labels, ious = worker.batch()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    # the single-process reference sees the same per-rank embeddings (ProtoNorm statistics are per rank, as in BN)
    emb = torch.cat([ranks[0]["emb"], ranks[1]["emb"]])
    single = worker.make().train()
    single(emb, labels, ious)
    for got in ranks:
        torch.testing.assert_close(got["lut"], single.lut)
        torch.testing.assert_close(got["cq"], single.cq)
        assert got["header"] == int(single.header_cq) == (3 % 3)
    torch.testing.assert_close(ranks[0]["emb"], F.normalize(ProtoNorm(8).train()(feats[:7], labels[:7])))


@pytest.mark.slow
def test_ddp_fit_keeps_the_tables_and_the_metrics_identical_on_both_ranks(tmp_path):
    script = Path(__file__).with_name("ddp_fit_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=600)
    a, b = (torch.load(tmp_path / f"rank{r}_train.pt") for r in (0, 1))
    assert a["lut"].abs().sum() > 0
    torch.testing.assert_close(a["lut"], b["lut"], rtol=0, atol=0)
    torch.testing.assert_close(a["cq"], b["cq"], rtol=0, atol=0)
    assert a["header"] == b["header"]
    va, vb = (torch.load(tmp_path / f"rank{r}_val.pt") for r in (0, 1))
    assert va == vb and "val/mAP" in va
