"""OIM and localization-aware OIM (LOIM) losses with their lookup table and circular queue as module buffers.

OIM (Xiao et al., CVPR'17, eqs. 1-3): for an L2-normalised RoI embedding x with label y, logits are
s * [V x ; U x] over the lookup table V (one row per labelled identity) and the circular queue U (recent
unlabelled features); the loss is the cross-entropy over labelled RoIs (unlabelled and background RoIs add no
term). After the logits are taken, the tables are updated RoI by RoI in batch order (an identity seen k times is
updated k times in a row): V_y <- (1 - a) V_y + a x, V_y <- V_y / ||V_y||, and unlabelled features overwrite the
queue at its header. OIM uses a = 1 - momentum = 0.5; LOIM (OIMNet++, Lee et al., ECCV'22, Sec. 3.2) uses the
proposal's IoU with its ground truth, a = clamp(IoU, 0.7, 1 - eps), so well-localised proposals move the table more.
The loss value and its gradient are the same for OIM and LOIM (the official code does not weight the cross-entropy).

RoI labels follow the official RoI head: 0 background, 1..num_pids labelled identity, 5555 unlabelled person.
Under DDP the features, labels and IoUs of every rank are gathered (rank order) before the update, so the tables
stay identical on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cvlab_shared.distributed import all_gather_rows

UNLABELED = 5555
TABLE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class OIMLoss(nn.Module):
    """OIM loss with a lookup table (`lut`), a circular queue (`cq`) and its write pointer (`header_cq`) as buffers.

    Args:
        num_features: embedding size (256).
        num_pids: labelled training identities, the lookup-table rows (CUHK-SYSU 5532, PRW 482).
        cq_size: circular-queue rows (CUHK-SYSU 5000, PRW 500).
        momentum: OIM table momentum (0.5): a = 1 - momentum is the weight of the new feature.
        scalar: logit scale s = 1 / temperature (30).
        table_dtype: "float32" (default) or "float16" (the official buffers, trained under CUDA autocast).
    """

    def __init__(
        self,
        num_features: int = 256,
        num_pids: int = 5532,
        cq_size: int = 5000,
        momentum: float = 0.5,
        scalar: float = 30.0,
        table_dtype: str = "float32",
    ) -> None:
        super().__init__()
        if table_dtype not in TABLE_DTYPES:
            raise ValueError(f"table_dtype must be one of {sorted(TABLE_DTYPES)}, got {table_dtype!r}")
        self.num_features, self.num_pids, self.cq_size = num_features, num_pids, cq_size
        self.momentum, self.scalar = momentum, scalar
        dtype = TABLE_DTYPES[table_dtype]
        self.register_buffer("lut", torch.zeros(num_pids, num_features, dtype=dtype))
        self.register_buffer("cq", torch.zeros(cq_size, num_features, dtype=dtype))
        self.register_buffer("header_cq", torch.zeros((), dtype=torch.long))

    def update_weight(self, ious: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        """Weight a of the new feature for each labelled RoI (OIM: 1 - momentum)."""
        return torch.full((n,), 1.0 - self.momentum, device=device)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """s * x [V; U]^T from the current (pre-update) tables; gradients reach `features` only."""
        # a copy (cat), so later in-place updates leave it intact; cast first: autocast's cat rejects fp16 tables on CPU
        tables = torch.cat([self.lut.to(features.dtype), self.cq.to(features.dtype)])
        return self.scalar * features @ tables.T

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | list[torch.Tensor], ious: torch.Tensor | list | None = None
    ) -> torch.Tensor:
        """Cross-entropy over labelled RoIs (Eq. 2), then (in training mode) the sequential table update.

        Args:
            features: (N, D) L2-normalised RoI embeddings.
            labels: (N,) RoI labels (0 background, 1..num_pids labelled, 5555 unlabelled), or a per-image list.
            ious: (N,) IoU of each RoI with its ground truth (used by LOIM), or a per-image list.
        """
        labels = torch.cat(labels) if isinstance(labels, (list, tuple)) else labels
        if isinstance(ious, (list, tuple)):
            ious = torch.cat(ious)
        labels = labels.to(features.device).long()
        keep = labels > 0
        x, y = features[keep], labels[keep] - 1
        iou = ious.to(features.device)[keep] if ious is not None else None
        logits = self.logits(x)
        labelled = y < self.num_pids
        if y.numel() and labelled.any():
            loss = F.cross_entropy(logits.float(), torch.where(labelled, y, torch.full_like(y, -100)))
        else:
            loss = logits.sum() * 0.0
        if self.training:
            self.update(x.detach(), y, iou)
        return loss

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor, ious: torch.Tensor | None = None) -> None:
        """Sequential table update with the RoIs of every rank (y = label - 1; y >= num_pids goes to the queue)."""
        x = all_gather_rows(x.float())
        y = all_gather_rows(y.long())
        if ious is not None:
            ious = all_gather_rows(ious.float())
        labelled = y < self.num_pids
        if labelled.any():
            xl, yl = x[labelled], y[labelled]
            weight = self.update_weight(ious[labelled] if ious is not None else None, len(yl), x.device)
            # the k-th occurrence of each identity in the batch is applied in round k: sequential per identity,
            # identical to the official RoI-by-RoI loop, vectorised over identities
            order = torch.argsort(yl, stable=True)
            ys = yl[order]
            first = torch.searchsorted(ys, ys, side="left")
            rank = torch.empty_like(yl)
            rank[order] = torch.arange(len(ys), device=ys.device) - first
            for r in range(int(rank.max()) + 1):
                idx = torch.nonzero(rank == r).flatten()
                rows, a = yl[idx], weight[idx, None]
                moved = (1.0 - a) * self.lut[rows].float() + a * xl[idx]
                self.lut[rows] = F.normalize(moved, dim=1).to(self.lut.dtype)
        xu = x[~labelled]
        n = len(xu)
        if n and self.cq_size:
            positions = (self.header_cq + torch.arange(n, device=x.device)) % self.cq_size
            last = slice(max(0, n - self.cq_size), n)  # later writes to the same slot win
            self.cq[positions[last]] = xu[last].to(self.cq.dtype)
            self.header_cq.copy_((self.header_cq + n) % self.cq_size)


class LOIMLoss(OIMLoss):
    """Localization-aware OIM (OIMNet++): the table update weight is the RoI's IoU clipped to [min_iou, 1 - eps].

    Args:
        eps: the weight's upper bound is 1 - eps (OIM_EPS 0.1).
        min_iou: lower clip (0.7, the RPN's positive threshold, applied by the official RoI head).
        (others as `OIMLoss`; `momentum` is unused)
    """

    def __init__(
        self,
        num_features: int = 256,
        num_pids: int = 5532,
        cq_size: int = 5000,
        momentum: float = 0.5,
        scalar: float = 30.0,
        table_dtype: str = "float32",
        eps: float = 0.1,
        min_iou: float = 0.7,
    ) -> None:
        super().__init__(num_features, num_pids, cq_size, momentum, scalar, table_dtype)
        self.eps, self.min_iou = eps, min_iou

    def update_weight(self, ious: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        """a = clamp(IoU, min_iou, 1 - eps) (OIMNet++ Sec. 3.2)."""
        if ious is None:
            raise ValueError("LOIMLoss needs the IoU of every RoI with its ground truth (ious=...)")
        return ious.float().clamp(min=self.min_iou, max=1.0 - self.eps)
