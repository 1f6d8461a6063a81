"""DDP: the prototype memory (state outside the model) is identical on two gloo processes after BPCL steps on
different data, and equal to one process seeing the whole batch; real adaptation steps of the LightningModule under
Lightning DDP leave prototypes and weights identical on both ranks."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

from bpcl_uda import PrototypeMemory

def _sibling(name: str):
    """Import this folder's `name.py` under a package-specific module name (every package's tests folder has its own
    worker scripts with the same file names, and one pytest process runs them all)."""
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_memory_worker = _sibling("ddp_memory_worker")
batch, step = _memory_worker.batch, _memory_worker.step


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


def test_adaptation_steps_under_ddp_keep_prototypes_and_weights_identical_on_both_ranks(tmp_path, monkeypatch):
    """Two real BPCLModule adaptation steps (Lightning DDP, 2 CPU processes, gloo), each rank on its own half of the
    data: the memory (source/target prototypes, calibration bias, seen flags) and the network weights are identical
    on both ranks, and the steps did change them."""
    fit_worker = _sibling("ddp_fit_worker")
    STEPS, prepare = fit_worker.STEPS, fit_worker.prepare

    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path / "cache"))  # the synthetic pair, for prepare() and the workers
    prepare(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("ddp_fit_worker.py")
    done = subprocess.run(
        [sys.executable, str(worker), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"fit_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["steps"] == b["steps"] == STEPS
    assert len(a["batches"]) == len(b["batches"]) == STEPS and a["batches"] != b["batches"]  # different data
    memory = a["memory"]
    assert memory["seen_source"].any() and memory["seen_target"].any() and memory["seen_bias"].any()
    for key in memory:
        torch.testing.assert_close(a["memory"][key], b["memory"][key], rtol=0, atol=0, msg=f"memory {key}")
    for key in a["net"]:
        torch.testing.assert_close(a["net"][key], b["net"][key], rtol=0, atol=0, msg=f"net {key}")
    assert any(not torch.equal(a["start"][k], a["net"][k]) for k in a["net"])  # the steps moved the weights
