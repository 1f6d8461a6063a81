"""Run as a script: two gloo processes each feed their own RoIs (uneven shards) to a LOIM loss and save the tables.

Used by test_oimnet_ddp.py (a script, so torch.multiprocessing's spawn can re-import it by path).
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from oimnet_pp import LOIMLoss, ProtoNorm


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(11, 8, generator=g)
    labels = torch.tensor([1, 3, 3, 5555, 0, 2, 3, 5555, 0, 5555, 1])
    ious = torch.rand(11, generator=g) * 0.5 + 0.5
    return feats, labels, ious


def make() -> LOIMLoss:
    loss = LOIMLoss(8, num_pids=4, cq_size=3)
    g = torch.Generator().manual_seed(6)
    loss.lut.copy_(F.normalize(torch.randn(4, 8, generator=g), dim=1))
    return loss


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    feats, labels, ious = batch()
    part = slice(0, 7) if rank == 0 else slice(7, 11)  # uneven shards: 7 and 4 RoIs
    loss_fn = make().train()
    norm = ProtoNorm(8).train()
    emb = F.normalize(norm(feats[part], labels[part]))
    loss_fn(emb, labels[part], ious[part])  # the tables are updated inside the (training-mode) forward
    torch.save(
        {"lut": loss_fn.lut, "cq": loss_fn.cq, "header": int(loss_fn.header_cq), "emb": emb.detach()},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(worker, args=(free_port, sys.argv[1]), nprocs=2, join=True)
