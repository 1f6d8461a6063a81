"""DDP helpers every package uses for state that lives outside the model (memories, prototypes, clustering).

Outside an initialised process group they are no-ops, so the same code runs on one process and under Lightning's
DDP strategy. Samplers that shard data over ranks live in `cvlab_shared.data.samplers`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes ((0, 1) outside DDP)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (n_r, ...) from every rank in rank order; ranks may hold different n_r. Identity when alone."""
    if not distributed():
        return x
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def broadcast_object(obj: object, src: int = 0) -> object:
    """`obj` as held by rank `src` on every rank (pickled); identity when alone."""
    if not distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
