"""Worker for test_reid_evaluator_ddp.py, in an importable module so torch.multiprocessing can spawn it."""

import json

import torch
import torch.distributed as dist

from cvlab_shared.metrics.retrieval import RetrievalEvaluator


def problem():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(12, 16, generator=gen)
    pids = torch.arange(12).repeat_interleave(6)
    cams = torch.arange(6).repeat(12)
    feats = centers[pids] + 0.8 * torch.randn(72, 16, generator=gen)
    is_query = cams == 0
    return feats, pids, cams, is_query


def worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    feats, pids, cams, is_query = problem()
    index = torch.arange(len(feats))
    # a DistributedSampler-like split: rank r takes every world-th item, the last rank repeats item 0 as padding
    mine = index[rank::world]
    if rank == world - 1:
        mine = torch.cat([mine, index[:1]])
    metric = RetrievalEvaluator(metric="euclidean")
    for chunk in mine.split(7):
        metric.update(feats[chunk], pids[chunk], cams[chunk], is_query[chunk], index=chunk)
    result = {k: float(v) for k, v in metric.compute().items()}
    with open(f"{out_file}.{rank}", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()
