"""The two ALIFE-M stages that are not gradient training of the network (Sec. 3.2): feature-memory extraction
(extract_mem.py) and rotation training (train_matrices.py). Both run on any device; extraction shards its samples
over DDP processes and gathers every sample once, so the memory is identical on every rank."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cvlab_shared.distributed import all_gather_rows, rank_and_world
from cvlab_shared.data.segmentation import SegmentationDataset
from cvlab_shared.models.deeplab import DeepLabV3
from alife.memory import MIN_AREA, FeatureMemory, class_region_means, sampling_plan
from alife.rotation import CayleyRotation, rotation_objective


def eligible_images(dataset: SegmentationDataset, classes: Sequence[int], min_area: float = MIN_AREA) -> list[np.ndarray]:
    """For each class, the images of `dataset` where it covers more than `min_area` of the (un-augmented) mask."""
    found: list[list[int]] = [[] for _ in classes]
    position = {c: k for k, c in enumerate(classes)}
    for index in range(len(dataset)):
        mask = dataset.load_mask(index)
        values, counts = np.unique(mask, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            if value in position and count > min_area * mask.size:
                found[position[value]].append(index)
    for cls, images in zip(classes, found):
        if not images:
            raise ValueError(f"no training image holds class {cls} over {min_area:.1%} of its pixels: "
                             "the feature memory cannot sample it")
    return [np.asarray(images) for images in found]


@torch.no_grad()
def _means(net: DeepLabV3, dataset: Dataset, plan: list[tuple[int, int]], classes: Sequence[int], batch_size: int,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(n, D) region means and (n,) validity of all of `plan`, gathered from every process; each process runs the
    network on its share only (rank r takes entries r, r+W, ...), whose size is returned third."""
    rank, world = rank_and_world()
    mine = list(range(rank, len(plan), world))
    subset = Subset(dataset, [plan[i][1] for i in mine])
    targets = torch.tensor([classes[plan[i][0]] for i in mine], dtype=torch.long)
    means, valid = [], []
    start = 0
    for image, mask in DataLoader(subset, batch_size=batch_size, shuffle=False):
        image, mask = image.to(device), mask.to(device)
        feature = net.forward_features(image)
        chosen = targets[start : start + len(image)].to(device)
        start += len(image)
        m, v = class_region_means(feature, mask, chosen)
        means.append(m.float())
        valid.append(v)
    dim = net.classifier.in_channels
    local = torch.cat(means) if means else torch.zeros(0, dim, device=device)
    ok = torch.cat(valid) if valid else torch.zeros(0, dtype=torch.bool, device=device)
    order = torch.tensor(mine, dtype=torch.long, device=device)
    gathered = all_gather_rows(torch.cat([local, ok.float().unsqueeze(1), order.float().unsqueeze(1)], dim=1))
    gathered = gathered[gathered[:, -1].argsort()]
    return gathered[:, :dim].cpu(), gathered[:, dim].bool().cpu(), len(mine)


def extract_memory(
    net: DeepLabV3,
    dataset: SegmentationDataset,
    classes: Sequence[int],
    per_class: int,
    seed: int = 0,
    batch_size: int = 16,
    max_rounds: int = 5,
) -> tuple[FeatureMemory, dict[str, float]]:
    """ALIFE-M memory of `classes` (extract_mem.py): `per_class` draws with replacement among the images where the
    class covers > 0.5 %, one augmented view each (the dataset's transform), the mean decoder feature of the class
    region; draws whose augmented region is too small are redrawn (up to `max_rounds` rounds, then the class's
    valid entries are repeated). Under DDP every draw is computed on one process only and gathered, so every process
    returns the same memory. Returns the memory and {"seconds", "samples", "redrawn", "computed"} (`computed`: the
    draws this process ran the network on)."""
    started = time.perf_counter()
    net.eval()
    device = next(net.parameters()).device
    eligible = eligible_images(dataset, classes)
    kept: list[list[torch.Tensor]] = [[] for _ in classes]
    pending = [per_class] * len(classes)
    redrawn = computed = 0
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)  # the augmentation draws: the same views on every process
    for round_index in range(max_rounds):
        if not any(pending):
            break
        plan = sampling_plan(eligible, pending, seed, round_index)
        means, valid, mine = _means(net, dataset, plan, classes, batch_size, device)
        computed += mine
        for (k, _), vector, ok in zip(plan, means, valid):
            if ok and pending[k] > 0:
                kept[k].append(vector)
                pending[k] -= 1
            elif not ok:
                redrawn += 1
    torch.set_rng_state(generator_state)
    rows = []
    for cls, vectors in zip(classes, kept):
        if not vectors:
            raise ValueError(f"class {cls}: no augmented view kept more than {MIN_AREA:.1%} of it; "
                             "use a larger crop_size")
        stacked = torch.stack(vectors)
        rows.append(stacked[torch.arange(per_class) % len(stacked)])
    memory = FeatureMemory(torch.stack(rows))
    return memory, {"seconds": time.perf_counter() - started, "samples": per_class * len(classes), "redrawn": redrawn,
                    "computed": computed}


def train_rotations(
    net_prev: DeepLabV3,
    net_curr: DeepLabV3,
    memory: FeatureMemory,
    dataset: Dataset,
    epochs: int = 10,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    lam: float = 0.95,
    temperature: float = 10.0,
    batch_size: int = 12,
    poly_power: float = 0.9,
    seed: int = 0,
) -> tuple[CayleyRotation, dict[str, float]]:
    """Train one Cayley rotation per memory class (train_matrices.py): both networks frozen, on the current step's
    training images (no labels used); Adam with poly decay; the current classifier scores the rotated representatives.
    Returns the rotations and {"seconds", "loss_first", "loss_last"}."""
    started = time.perf_counter()
    device = next(net_curr.parameters()).device
    net_prev.eval()
    net_curr.eval()
    rotation = CayleyRotation(memory.num_classes, memory.dim).to(device)
    optimizer = torch.optim.Adam(rotation.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                        generator=generator)
    total = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: (1 - min(i, total - 1) / total) ** poly_power)
    stored = memory.features.to(device)
    weight, bias = net_curr.classifier.weight().detach(), net_curr.classifier.bias().detach()
    losses = []
    for _ in range(epochs):
        for image, _ in loader:
            image = image.to(device)
            with torch.no_grad():
                prev = net_prev.forward_features(image)
                curr = net_curr.forward_features(image)
            dim = prev.shape[1]
            prev = prev.permute(0, 2, 3, 1).reshape(-1, dim)
            curr = curr.permute(0, 2, 3, 1).reshape(-1, dim)
            loss, _ = rotation_objective(rotation, stored, prev, curr, weight, bias, temperature, lam)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    return rotation, {"seconds": time.perf_counter() - started, "loss_first": losses[0], "loss_last": losses[-1]}
