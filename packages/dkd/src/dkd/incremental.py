"""The parts of a DKD incremental step that are not the loss (DKD Sec. 3.3-3.4 and the official training recipe)."""

from __future__ import annotations

import torch
from torch import nn

from cvlab_shared.models.deeplab import DeepLabV3, IncrementalClassifier


@torch.no_grad()
def init_novel_classifier(classifier: IncrementalClassifier) -> None:
    """Copy the auxiliary classifier (group 0) into every row of the newest group (DKD Sec. 3.3).

    The auxiliary classifier was trained to say "negative" on every pixel of the previous step, so the new
    classifiers start from that knowledge instead of from random rows.
    """
    aux, new = classifier.heads[0], classifier.heads[-1]
    new.weight.copy_(aux.weight.expand_as(new.weight))
    new.bias.copy_(aux.bias.expand_as(new.bias))


def freeze_bn_and_dropout(model: nn.Module) -> None:
    """Put every BatchNorm and Dropout in eval mode and stop BN affine updates (official `--freeze_bn`, steps >= 1).

    Call after every `model.train()`: Lightning switches modules back to training mode each epoch.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)
        elif isinstance(module, nn.Dropout):
            module.eval()


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def parameter_groups(model: DeepLabV3, step: int, lr: float, weight_decay: float, head_lr_mult: float = 10.0) -> list[dict]:
    """SGD parameter groups of the official recipe (DKD train_voc.py / train_ade.py).

    Step 0: backbone at `lr`, ASPP + feature conv and all classifiers at `head_lr_mult * lr`, all with weight decay.
    Steps >= 1: backbone at `lr`, ASPP at 10x, old classifiers (auxiliary included) at 10x, all without weight decay;
    only the new classifier keeps weight decay. Frozen (requires_grad False) parameters are left out.
    """
    head = list(model.aspp.parameters()) + list(model.last_conv.parameters())
    head = [p for p in head if p.requires_grad]
    heads = model.classifier.heads
    if step == 0:
        groups = [
            {"params": _trainable(model.backbone), "lr": lr, "weight_decay": weight_decay, "name": "backbone"},
            {"params": head, "lr": lr * head_lr_mult, "weight_decay": weight_decay, "name": "aspp"},
            {"params": _trainable(heads), "lr": lr * head_lr_mult, "weight_decay": weight_decay, "name": "classifier"},
        ]
    else:
        old = [p for h in heads[:-1] for p in _trainable(h)]
        groups = [
            {"params": _trainable(model.backbone), "lr": lr, "weight_decay": 0.0, "name": "backbone"},
            {"params": head, "lr": lr * head_lr_mult, "weight_decay": 0.0, "name": "aspp"},
            {"params": old, "lr": lr * head_lr_mult, "weight_decay": 0.0, "name": "old_classifier"},
            {"params": _trainable(heads[-1]), "lr": lr * head_lr_mult, "weight_decay": weight_decay, "name": "new_classifier"},
        ]
    return [g for g in groups if g["params"]]


def predict(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """DKD inference: class = 1 + argmax of sigmoid over channels 1.. (aux ignored); background 0 where no class
    probability exceeds `threshold`. (N, 1 + C, H, W) -> (N, H, W) int64."""
    prob = torch.sigmoid(logits[:, 1:])
    best, index = prob.max(dim=1)
    return torch.where(best > threshold, index + 1, torch.zeros_like(index))
