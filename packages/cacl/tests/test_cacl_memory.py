"""Cluster memory: logits, momentum updates, and identical state on every rank under DDP (2 gloo processes)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cacl.memory import ClusterMemory, all_gather_rows, class_centroids


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(7, 4, generator=g)
    labels = torch.tensor([0, 2, 1, 2, -1, 0, 1])
    return feats, labels, torch.randn(3, 4, generator=g)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    feats, labels, centroids = _batches()
    part = slice(0, 4) if rank == 0 else slice(4, 7)  # uneven shards: 4 and 3 samples
    mem = ClusterMemory(4, momentum=0.3)
    mem.reset(centroids)
    mem.update(feats[part], labels[part])
    gathered = all_gather_rows(labels[part].unsqueeze(1).float())
    torch.save({"memory": mem.features, "gathered": gathered}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_update_equals_the_single_process_update_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    feats, labels, centroids = _batches()
    single = ClusterMemory(4, momentum=0.3)
    single.reset(centroids)
    single.update(feats, labels)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["memory"], single.features)
        torch.testing.assert_close(got["gathered"].squeeze(1).long(), labels)
