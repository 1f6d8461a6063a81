"""The two forward passes of a RankMixup training step: the raw batch, then its mixed copies (RankMixup sec. 3.1).

As in the official `forward_multimixup`, the mixed copies go through the network in a second forward pass, so in
train mode they are normalised with their own batch statistics, not the raw batch's.

`layer_mix=0` mixes images. `layer_mix=4` mixes the last-stage (layer-4) features: the official code runs the raw
images through the backbone a second time and mixes the feature maps before average pooling. Pooling is linear, so
mixing the pooled `forward_features` output is the same; and a second train-mode pass over the same images computes
the same features, so we reuse the raw pass's (only the BN running statistics are updated once, not twice, per step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rankmixup.mixup import MixupBatch, multi_mixup

LAYER_MIX = (0, 4)


def mixup_forward(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    num_classes: int,
    num_mixup: int = 1,
    mixup_alpha: float = 2.0,
    layer_mix: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, MixupBatch]:
    """(raw logits (B, K), mixed logits (M*B, K), the mixup batch) for one training step."""
    if layer_mix == 0:
        logits = model(x)
        batch = multi_mixup(x, targets, num_classes, num_mixup, mixup_alpha, generator)
        return logits, model(batch.inputs), batch
    if layer_mix == 4:
        if not (hasattr(model, "forward_features") and hasattr(model, "classifier")):
            raise TypeError(f"layer_mix=4 needs a model with forward_features() and classifier, got {type(model).__name__}")
        features = model.forward_features(x)
        batch = multi_mixup(features, targets, num_classes, num_mixup, mixup_alpha, generator)
        return model.classifier(features), model.classifier(batch.inputs), batch
    raise ValueError(f"layer_mix must be one of {LAYER_MIX}, got {layer_mix}")
