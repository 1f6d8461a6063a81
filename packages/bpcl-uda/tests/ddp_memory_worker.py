"""Run as a script: two gloo processes update a PrototypeMemory from different halves of a batch (a BPCL step's
memory updates: source, label transfer + hybrid labels, target, calibration) and save what each rank holds.

Used by test_bpcl_ddp.py (a script, so torch.multiprocessing's spawn can re-import it by path).
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bpcl_uda import PrototypeMemory, hybrid_pseudo_labels, transfer_labels


def batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A batch of 4 source and 4 target images: features [4, 6, 4, 4], labels [4, 8, 8] over 5 classes + 255."""
    g = torch.Generator().manual_seed(seed)
    feature_s, feature_t = torch.randn(4, 6, 4, 4, generator=g), torch.randn(4, 6, 4, 4, generator=g)
    pick = torch.tensor([0, 1, 2, 3, 4, 255])
    label_s = pick[torch.randint(0, 6, (4, 8, 8), generator=g)]
    label_t = pick[torch.randint(0, 6, (4, 8, 8), generator=g)]
    label_s[:2][label_s[:2] == 3] = 0  # class 3 only in the second half of the source batch
    return feature_s, label_s, feature_t, label_t


def step(memory: PrototypeMemory, feature_s, label_s, feature_t, label_t) -> torch.Tensor:
    """The memory updates of one adaptation step (module.BPCLModule.training_step, paper convention)."""
    memory.update("source", feature_s, label_s)
    dynamic = transfer_labels(
        feature_t, memory.calibrated_source(0.5), memory.seen_source, label_t.shape[-2:], 0.1, 0.3
    )
    pseudo = hybrid_pseudo_labels(label_t, dynamic)
    memory.update("target", feature_t, pseudo)
    memory.update_calibration()
    return pseudo


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    memory = PrototypeMemory(5, 6, momentum=0.5, calibration_momentum=0.5)
    for seed in (0, 1):
        part = slice(2 * rank, 2 * rank + 2)
        step(memory, *(x[part] for x in batch(seed)))
    torch.save(memory.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(worker, args=(free_port, sys.argv[1]), nprocs=2, join=True)
