"""cvlab_shared.distributed: identity on one process; uneven all-gather and broadcast over two gloo processes."""

import subprocess
import sys
from pathlib import Path

import torch

from cvlab_shared.distributed import all_gather_rows, broadcast_object, distributed, rank_and_world


def test_single_process_is_identity():
    x = torch.randn(4, 3)
    assert not distributed()
    assert rank_and_world() == (0, 1)
    assert all_gather_rows(x) is x
    assert broadcast_object({"a": 1}) == {"a": 1}


def test_two_gloo_processes_gather_uneven_rows_in_rank_order(tmp_path):
    script = Path(__file__).with_name("distributed_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=120)
    expected = torch.cat([torch.arange(6, dtype=torch.float32).view(3, 2), torch.full((1, 2), -1.0)])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["rank_and_world"] == (rank, 2)
        assert got["distributed"]
        torch.testing.assert_close(got["gathered"], expected)
        assert got["broadcast"] == {"from": 0}
