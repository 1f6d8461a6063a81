"""Cluster memory: logits, momentum updates, and identical state on every rank under DDP (2 gloo processes)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from cacl.memory import ClusterMemory, class_centroids


def test_logits_are_cosine_over_temperature():
    mem = ClusterMemory(3, temperature=0.5)
    mem.reset(torch.tensor([[2.0, 0, 0], [0, 1.0, 0]]))
    torch.testing.assert_close(mem.logits(torch.tensor([[3.0, 0, 0]])), torch.tensor([[2.0, 0.0]]))


def test_sample_update_is_sequential_momentum_and_skips_outliers():
    mem = ClusterMemory(2, momentum=0.5)
    mem.reset(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    mem.update(torch.tensor([[0.0, 1.0], [0.0, 2.0], [5.0, 5.0]]), torch.tensor([0, 0, -1]))
    step1 = F.normalize(torch.tensor([0.5, 0.5]), dim=0)
    step2 = F.normalize(0.5 * step1 + 0.5 * torch.tensor([0.0, 1.0]), dim=0)
    torch.testing.assert_close(mem.features[0], step2)
    torch.testing.assert_close(mem.features[1], torch.tensor([0.0, 1.0]))


def test_class_centroids_and_resized_state_dict_loading():
    c = class_centroids(torch.tensor([[1.0, 0], [3.0, 0], [0, 2.0], [9.0, 9.0]]), torch.tensor([0, 0, 1, -1]), 3)
    torch.testing.assert_close(c, torch.tensor([[2.0, 0], [0, 2.0], [0, 0]]))
    saved = ClusterMemory(2)
    saved.reset(torch.randn(5, 2))
    fresh = torch.nn.Sequential(ClusterMemory(2))
    fresh.load_state_dict(torch.nn.Sequential(saved).state_dict())
    torch.testing.assert_close(fresh[0].features, saved.features)


def test_ddp_update_equals_the_single_process_update_on_the_whole_batch(tmp_path):
    script = Path(__file__).with_name("ddp_memory_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=120)
    spec = importlib.util.spec_from_file_location("ddp_memory_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    feats, labels, centroids = worker.batches()
    single = ClusterMemory(4, momentum=0.3)
    single.reset(centroids)
    single.update(feats, labels)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["memory"], single.features)
        torch.testing.assert_close(got["gathered"].squeeze(1).long(), labels)
