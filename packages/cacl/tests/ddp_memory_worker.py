"""Run as a script: two gloo processes update a ClusterMemory with uneven shards and save what each rank holds.

Used by test_cacl_memory.py (a script, so torch.multiprocessing's spawn can re-import it by path).
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cacl.memory import ClusterMemory
from cvlab_shared.distributed import all_gather_rows


def batches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(7, 4, generator=g)
    labels = torch.tensor([0, 2, 1, 2, -1, 0, 1])
    return feats, labels, torch.randn(3, 4, generator=g)


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    feats, labels, centroids = batches()
    part = slice(0, 4) if rank == 0 else slice(4, 7)  # uneven shards: 4 and 3 samples
    mem = ClusterMemory(4, momentum=0.3)
    mem.reset(centroids)
    mem.update(feats[part], labels[part])
    gathered = all_gather_rows(labels[part].unsqueeze(1).float())
    torch.save({"memory": mem.features, "gathered": gathered}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(worker, args=(free_port, sys.argv[1]), nprocs=2, join=True)
