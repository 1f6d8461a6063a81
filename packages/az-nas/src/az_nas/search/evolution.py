"""Evolutionary search under a FLOPs budget in the MobileNetV2 space, parents chosen by AZ-NAS aggregated rank.

Protocol of the reference search (AZ-NAS section 4.2, ZenNAS-style): the first few candidates mutate one part of
a fixed initial network; until the population is full a parent is any earlier candidate and two parts mutate;
after that a parent is drawn from the top (population - 1) of the whole history, ranked by the log-rank
aggregation recomputed over the history. Children over the FLOPs budget or the layer cap are discarded unscored.
Children are generated and scored `batch` at a time; `iterations` counts scored children only. If no new child
satisfies the constraints within 200 mutations the search stops with a warning (also in `extra["stopped"]`).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from az_nas.aggregate import aggregate
from az_nas.proxies.az import score_network
from az_nas.proxies.flops import count_flops
from az_nas.search.result import SearchResult
from az_nas.spaces import mobilenetv2, mobilenetv2_stages
from cvlab_shared.logging import progress

WARMUP = 10


@dataclass(frozen=True)
class EvolutionSpace:
    """What the search needs from a space: its initial genome, mutation, network, FLOPs and JSON reader."""

    name: str
    initial: object
    mutate: Callable
    network: Callable[..., nn.Module]
    flops: Callable[[object, int], float]
    from_json: Callable[[str], object]


SPACES = {
    # the official space (default): FLOPs as the official counter (BN included), cap = layers incl. stem and head
    "mobilenetv2": EvolutionSpace(
        "mobilenetv2", mobilenetv2.INITIAL, mobilenetv2.mutate, mobilenetv2.MBV2Network,
        lambda g, r: mobilenetv2.mbv2_flops(g, r), mobilenetv2.MBV2Genome.from_json,
    ),
    # our earlier, simpler genome: conv/linear MACs without BN, cap = inverted residuals
    "mobilenetv2-stages": EvolutionSpace(
        "mobilenetv2-stages", mobilenetv2_stages.INITIAL, mobilenetv2_stages.mutate, mobilenetv2_stages.MBV2Network,
        lambda g, r: count_flops(mobilenetv2_stages.MBV2Network(g, num_classes=1000), (1, 3, r, r)),
        mobilenetv2_stages.MBV2Genome.from_json,
    ),
}


def evolution_search(
    flops_budget: float,
    max_layers: int,
    *,
    iterations: int = 100,
    population: int = 64,
    batch: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    resolution: int = 224,
    flops_resolution: int = 224,
    num_classes: int = 1000,
    device: str = "cpu",
    numerics: str = "stable",
    space: str = "mobilenetv2",
    initial: object | None = None,
    show_progress: bool = True,
) -> SearchResult:
    """Score `iterations` children in all (fewer only with a warning); return the history (best = argmax score)."""
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; expected one of {list(SPACES)}")
    sp = SPACES[space]
    initial = sp.initial if initial is None else initial
    rng = random.Random(seed)
    torch.manual_seed(seed)
    genomes: list = []
    scores: list[dict[str, float]] = []
    seen: set = set()
    stopped = None
    rounds = range(0, iterations, batch)  # every round scores min(batch, left) children, or the search stops
    for _ in progress(rounds, desc="evolution (generations)") if show_progress else rounds:
        children = []
        for _ in range(min(batch, iterations - len(genomes))):
            child = _child(
                sp, genomes, scores, rng, initial, population, max_layers, flops_budget, seen, flops_resolution
            )
            if child is None:
                stopped = (
                    f"no new child within the {flops_budget:.3g} FLOPs budget and {max_layers} layers in 200 mutations"
                )
                break
            children.append(child)
        for genome, flops in children:
            net = sp.network(genome, num_classes=num_classes)
            record = score_network(
                net, input_shape=(batch_size, 3, resolution, resolution), numerics=numerics, device=device,
                complexity=False, copy_model=False,
            )
            record["complexity"] = flops
            genomes.append(genome)
            scores.append(record)
        if stopped is not None:
            break
    if stopped is not None:
        stopped = f"evolution stopped after {len(genomes)} of {iterations} children: {stopped}"
        warnings.warn(stopped, stacklevel=2)
    extra = {"flops_budget": flops_budget, "max_layers": max_layers, "seed": seed, "population": population,
             "resolution": resolution, "flops_resolution": flops_resolution, "batch_size": batch_size,
             "numerics": numerics,
             "iterations": iterations, "stopped": stopped}
    return SearchResult(space, [g.to_json() for g in genomes], scores, extra)


def _child(sp, genomes, scores, rng, initial, population, max_layers, budget, seen, resolution, attempts: int = 200):
    """A new in-budget genome and its FLOPs, or None when `attempts` mutations all failed the constraints."""
    for _ in range(attempts):
        if len(genomes) < WARMUP:
            parent, changes = initial, 1
        elif len(genomes) < population - 1:
            parent, changes = rng.choice(genomes), 2
        else:
            top = np.argsort(-aggregate(scores), kind="stable")[: population - 1]
            parent, changes = genomes[int(rng.choice(list(top)))], 2
        child = sp.mutate(parent, rng, max_layers, changes)
        if child in seen or child.num_layers > max_layers:
            continue
        flops = sp.flops(child, resolution)
        if flops <= budget:
            seen.add(child)
            return child, flops
    return None
