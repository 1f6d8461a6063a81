"""Random search on NAS-Bench-201: sample cells uniformly, score them in chunks, pick the best aggregated rank."""

from __future__ import annotations

import random

import torch

from az_nas.proxies.az import score_network
from az_nas.search.batched import score_nb201_batch
from az_nas.search.result import SearchResult
from az_nas.spaces.nb201 import NB201Network, all_archs, format_arch, random_arch
from cvlab_shared.logging import progress


def sample_archs(n: int | None, seed: int) -> list[str]:
    """`n` distinct cells drawn uniformly (all 15,625 in enumeration order when n is None)."""
    if n is None:
        return [format_arch(a) for a in all_archs()]
    if not 1 <= n <= 5**6:
        raise ValueError(f"number of candidates must be in 1..{5**6}, got {n}")
    rng, seen = random.Random(seed), {}
    while len(seen) < n:
        arch = format_arch(random_arch(rng))
        seen.setdefault(arch, None)
    return list(seen)


def random_search(
    n: int | None = 100,
    *,
    seed: int = 0,
    batch: int = 1,
    batch_size: int = 64,
    resolution: int = 32,
    num_classes: int = 10,
    device: str = "cpu",
    numerics: str = "stable",
    show_progress: bool = True,
) -> SearchResult:
    """Score `n` random NB201 cells (all of them for n=None); `batch` > 1 scores that many cells per pass."""
    archs = sample_archs(n, seed)
    torch.manual_seed(seed)
    shape = (batch_size, 3, resolution, resolution)
    chunks = [archs[i : i + batch] for i in range(0, len(archs), batch)]
    iterator = progress(chunks, desc="scoring NB201 cells") if show_progress else chunks
    scores: list[dict[str, float]] = []
    for chunk in iterator:
        if batch > 1:
            scores += score_nb201_batch(
                chunk, input_shape=shape, num_classes=num_classes, numerics=numerics, device=device
            )
        else:
            net = NB201Network(chunk[0], num_classes=num_classes)
            scores.append(score_network(net, input_shape=shape, numerics=numerics, device=device, copy_model=False))
    extra = {"seed": seed, "batch": batch, "num_classes": num_classes, "input_shape": list(shape),
             "numerics": numerics, "device": device}
    return SearchResult("nb201", archs, scores, extra)
