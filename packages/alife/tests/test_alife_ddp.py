"""Memory extraction under DDP (2 CPU gloo processes): every sample is computed once, on one rank, and gathered,
so both ranks hold the same memory, equal to the single-process one. The worker calls `alife.stages.extract_memory`,
the function `alife train --memory` runs in every process (`Run.memory_stages`)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from alife.model import build_network
from alife.stages import extract_memory
from cvlab_shared.data.seg_transforms import eval_transform
from cvlab_shared.data.segmentation import SegmentationDataset, voc_samples
from cvlab_shared.data.synthetic_seg import write_synthetic_voc


def test_two_processes_extract_the_single_process_memory(tmp_path):
    root = write_synthetic_voc(tmp_path / "data", num_train=24, num_val=2, size=32, seed=0)
    torch.manual_seed(0)
    net = build_network([4, 2], "resnet18", 8, 16).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    dataset = SegmentationDataset(voc_samples(root, "train_aug"), eval_transform(None))
    single, stats = extract_memory(net, dataset, [0, 1, 2], per_class=5, seed=3, batch_size=2)

    script = Path(__file__).with_name("ddp_memory_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "net.pt"), str(tmp_path)], check=True,
                   timeout=300, env=env)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["features"], ranks[1]["features"])
    assert ranks[0]["samples"] == 15
    # every draw ran through the network on exactly one process: the shares add up to the single-process count
    assert stats["computed"] >= 15 and ranks[0]["computed"] + ranks[1]["computed"] == stats["computed"]
    assert abs(ranks[0]["computed"] - ranks[1]["computed"]) <= 1
    torch.testing.assert_close(ranks[0]["features"], single.features, atol=1e-5, rtol=1e-5)
