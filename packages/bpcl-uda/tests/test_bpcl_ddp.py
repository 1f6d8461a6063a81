"""DDP: the prototype memory (state outside the model) is identical on two gloo processes after BPCL steps on
different data, and equal to one process seeing the whole batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from bpcl_uda import PrototypeMemory

sys.path.insert(0, str(Path(__file__).parent))
from ddp_memory_worker import batch, step  # noqa: E402


def test_memory_identical_on_two_processes_and_equal_to_one(tmp_path):
    worker = Path(__file__).with_name("ddp_memory_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(worker), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = PrototypeMemory(5, 6, momentum=0.5, calibration_momentum=0.5)
    for seed in (0, 1):
        step(single, *batch(seed))
    assert single.seen_source.all() and single.seen_bias.any()
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6)
