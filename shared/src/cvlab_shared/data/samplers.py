"""Samplers that shard data across DDP ranks so that two processes see exactly what one process sees."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ShuffledShardSampler(DistributedSampler):
    """A seeded per-epoch permutation (seed + epoch), rank r taking every world-th index from r.

    With one process this is a plain seeded shuffle; with W processes and a per-rank batch of B/W, the W rank
    batches of step k together hold exactly the single-process batch k of size B, so DDP training follows the
    single-process run. Lightning calls `set_epoch` and leaves DistributedSampler subclasses in place.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        if len(dataset) % num_replicas:
            raise ValueError(f"{len(dataset)} training samples do not split evenly over {num_replicas} processes")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)


class UnpaddedShardSampler(DistributedSampler):
    """Evaluation sharding without padding: rank r reads indices r, r + W, ... so every sample is counted once.

    torch's DistributedSampler repeats samples to even out the ranks, which would bias gathered metrics.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
