"""Worker for the two-process gloo test of the calibration metrics (importable by spawned children)."""

import torch
import torch.distributed as dist

from cvlab_shared.metrics.calibration_metric import CalibrationMetrics, LogitCollector


def gather_metrics(rank: int, port: int, logits: torch.Tensor, labels: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    metric, collector = CalibrationMetrics(), LogitCollector()
    shard = slice(0, 61) if rank == 0 else slice(61, None)  # uneven shards
    metric.update(logits[shard], labels[shard])
    collector.update(logits[shard], labels[shard])
    out[rank] = ({k: v.item() for k, v in metric.compute().items()}, collector.compute()[1].numel())
    dist.destroy_process_group()
