"""Run as a script: two gloo processes extract one feature memory; each rank saves what it holds.

Used by test_alife_ddp.py (argv: data root, network weights file, output folder).
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alife.model import build_network
from alife.stages import extract_memory
from cvlab_shared.data.seg_transforms import eval_transform
from cvlab_shared.data.segmentation import SegmentationDataset, voc_samples


def worker(rank: int, port: int, root: str, weights: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    net = build_network([4, 2], "resnet18", 8, 16)
    net.load_state_dict(torch.load(weights, weights_only=True))
    dataset = SegmentationDataset(voc_samples(root, "train_aug"), eval_transform(None))
    memory, stats = extract_memory(net.eval(), dataset, [0, 1, 2], per_class=5, seed=3, batch_size=2)
    torch.save({"features": memory.features, "samples": stats["samples"], "computed": stats["computed"]}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(worker, args=(free_port, *sys.argv[1:4]), nprocs=2, join=True)
