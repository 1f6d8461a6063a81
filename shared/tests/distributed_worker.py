"""Run as a script: two gloo processes exercise cvlab_shared.distributed and save what each rank got.

Used by test_distributed.py (a script, so torch.multiprocessing's spawn can re-import it by path).
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cvlab_shared.distributed import all_gather_rows, broadcast_object, distributed, rank_and_world


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    rows = torch.arange(3 * 2, dtype=torch.float32).view(3, 2) if rank == 0 else torch.full((1, 2), -1.0)
    got = {
        "rank_and_world": rank_and_world(),
        "distributed": distributed(),
        "gathered": all_gather_rows(rows),
        "broadcast": broadcast_object({"from": rank}),
    }
    torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(worker, args=(free_port, sys.argv[1]), nprocs=2, join=True)
