"""`RankMixupClassifier`: the core's `CalibratedClassifier` trained with MRL, M-NDCG, mixup or plain CE.

A training step (RankMixup sec. 3): forward the raw batch, draw `num_mixup` mixed copies (one lam ~ Beta(mixup_alpha,
mixup_alpha) and one permutation each), forward them in a second pass (their own BN batch statistics), then
CE on the raw samples + alpha * the ranking term. The mixup draw of a step is seeded by (mixup_seed, DDP rank,
epoch, batch index), so a run is reproducible, resumes identically and every process draws differently.
Evaluation, temperature scaling and the ACC/ECE/AECE/CECE/NLL report are the core's.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvlab_shared.classification import CalibratedClassifier
from rankmixup.forward import LAYER_MIX, mixup_forward
from rankmixup.losses import MixupLoss, MNDCGLoss, MRLLoss

LOSSES = ("ce", "mixup", "mrl", "mndcg")


def build_loss(
    loss: str, num_classes: int, margin: float, alpha: float, mrl_reduction: str, raw_weight: float
) -> nn.Module | None:
    """The criterion named `loss` (None for plain CE, which needs no mixup)."""
    if loss == "mrl":
        return MRLLoss(num_classes, margin=margin, alpha=alpha, reduction=mrl_reduction)  # type: ignore[arg-type]
    if loss == "mndcg":
        return MNDCGLoss(num_classes, alpha=alpha)
    if loss == "mixup":
        return MixupLoss(num_classes, raw_weight=raw_weight)
    if loss == "ce":
        return None
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


class RankMixupClassifier(CalibratedClassifier):
    def __init__(
        self,
        loss: Literal["ce", "mixup", "mrl", "mndcg"] = "mrl",
        margin: float = 2.0,
        alpha: float = 0.1,
        mixup_alpha: float = 2.0,
        num_mixup: int = 1,
        layer_mix: int = 0,
        mrl_reduction: Literal["per_sample", "official"] = "per_sample",
        raw_weight: float = 0.0,
        mixup_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """Classifier trained with a RankMixup loss; the other arguments are `CalibratedClassifier`'s.

        Args:
            loss: mrl | mndcg | mixup (baseline, soft-label CE on the mixes) | ce (no mixup).
            margin: MRL margin on max logits (official: 2.0 CIFAR, 1.0 Tiny-ImageNet).
            alpha: weight of the ranking term (official 0.1).
            mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha) (official: 2.0 CIFAR, 1.0 Tiny-ImageNet).
            num_mixup: mixed copies per batch (official: 1 for MRL, 3 for M-NDCG).
            layer_mix: 0 mixes images, 4 mixes layer-4 features.
            mrl_reduction: per_sample (paper, any num_mixup) | official (B x B broadcast, num_mixup 1).
            raw_weight: mixup baseline only: weight of CE on the raw samples (0 = mixup, >0 = RegMixup form).
            mixup_seed: seed of the mixup draws.
        """
        super().__init__(**kwargs)
        if layer_mix not in LAYER_MIX:
            raise ValueError(f"layer_mix must be one of {LAYER_MIX}, got {layer_mix}")
        if num_mixup < 1:
            raise ValueError(f"num_mixup must be >= 1, got {num_mixup}")
        self.criterion = build_loss(loss, self.hparams.num_classes, margin, alpha, mrl_reduction, raw_weight)
        if isinstance(self.criterion, MRLLoss) and mrl_reduction == "official" and num_mixup != 1:
            raise ValueError("mrl_reduction='official' needs num_mixup=1 (the official MRL fails with more copies)")

    def mixup_generator(self, batch_idx: int) -> torch.Generator:
        """The generator of this step's mixup draw, seeded by (mixup_seed, rank, epoch, batch index)."""
        entropy = [self.hparams.mixup_seed, self.global_rank, self.current_epoch, batch_idx]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    def training_loss(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        """CE on the raw batch + alpha * the ranking term on this step's mixes (drawn from `mixup_generator`)."""
        x, y = batch
        if self.criterion is None:
            return F.cross_entropy(self(x), y), {}
        hp = self.hparams
        logits, mixed_logits, mixed = mixup_forward(self.model, x, y, hp.num_classes, hp.num_mixup, hp.mixup_alpha,
                                                    hp.layer_mix, self.mixup_generator(batch_idx))
        out = self.criterion(logits, mixed_logits, y, mixed.soft_targets)
        return out.loss, {"loss_ce": out.loss_ce, "loss_mixup": out.loss_mixup}
