"""Random search in an AutoFormer ViT space, as in AZ-NAS's transformer experiments.

Candidates are drawn uniformly inside the space's parameter window, each is built with the ViT initialisation (no
Kaiming re-initialisation), scored in eval mode on one random batch by expressivity, trainability and complexity
(no progressivity), and the chosen one is the argmax of the log-rank aggregation of those three.
"""

from __future__ import annotations

import torch

from az_nas.proxies.az import Numerics, score_network
from az_nas.search.result import SearchResult
from az_nas.spaces.autoformer import (
    SPACES,
    AutoFormerSpace,
    ViTConfig,
    VisionTransformer,
    sample_in_window,
    vit_flops,
    vit_params,
)
from cvlab_shared.logging import progress

AUTOFORMER_PROXIES = ("expressivity", "trainability", "complexity")


def score_vit(
    config: ViTConfig,
    *,
    batch_size: int = 64,
    resolution: int = 224,
    num_classes: int = 1000,
    numerics: Numerics = "stable",
    device: str = "cpu",
) -> dict[str, float]:
    """E and T of the candidate's ViT on a (batch_size, 3, resolution, resolution) batch; C and params at 224 px."""
    net = VisionTransformer(config, image_size=resolution, num_classes=num_classes)
    record = score_network(
        net, input_shape=(batch_size, 3, resolution, resolution), numerics=numerics, device=device,
        reinit=False, train=False, progressivity=False, complexity=False, copy_model=False,
    )
    record["complexity"] = vit_flops(config)
    record["params"] = float(vit_params(config))
    return record


def autoformer_search(
    space: str | AutoFormerSpace = "tiny",
    n: int = 100,
    *,
    seed: int = 0,
    batch_size: int = 64,
    resolution: int = 224,
    num_classes: int = 1000,
    device: str = "cpu",
    numerics: Numerics = "stable",
    show_progress: bool = True,
) -> SearchResult:
    """Score `n` distinct random candidates of `space` ('tiny', 'small', 'base' or a custom space) in its window."""
    space = SPACES[space] if isinstance(space, str) else space
    configs = sample_in_window(space, n, seed)
    torch.manual_seed(seed)
    iterator = progress(configs, desc=f"scoring AutoFormer-{space.name} candidates") if show_progress else configs
    scores = [
        score_vit(c, batch_size=batch_size, resolution=resolution, num_classes=num_classes, numerics=numerics,
                  device=device)
        for c in iterator
    ]
    extra = {"seed": seed, "input_shape": [batch_size, 3, resolution, resolution], "numerics": numerics,
             "device": device, "param_window": [space.min_params, space.max_params],
             "complexity_and_params_at": "224 px, 1000 classes"}
    return SearchResult(f"autoformer-{space.name}", [c.to_json() for c in configs], scores, extra, AUTOFORMER_PROXIES)
