"""STMN's spatial and temporal memories and the memory spread loss (Eom et al., ICCV'21, Sec. 3.2-3.4).

Defaults follow the paper: the spatial memory reads once per spatial location (one D-dim query per position of the
H x W map) and every key vector is L2-normalised. Two options reproduce the official code (cvlab-yonsei/STMN
`memory.py`, pinned by the golden `stmn_spatial_memory` / `stmn_temporal_memory` entries):

- `layout="official"`: the NCHW query is flattened with a plain reshape to rows of D values (no permute), so each
  "query" mixes D / (H W) channels over all positions; the read is un-flattened the same way.
- `key_norm="slot"`: the key matrix is normalised along the memory-slot axis (`F.normalize(key.t(), dim=1)`)
  instead of per key vector.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = ("position", "official")
KEY_NORMS = ("key", "slot")


def memory_spread_loss(attention: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Memory spread loss (paper Eq. 5): mean over slots j of max(0, m - (max_i a_ij - min_i a_ij)), where the rows i
    of `attention` (N, M) are the queries of the batch. Each slot must be read strongly by one query, weakly by another."""
    spread = attention.max(dim=0).values - attention.min(dim=0).values
    return F.relu(margin - spread).mean()


class MemorySpreadLoss(nn.Module):
    """`memory_spread_loss` with a fixed margin (0.3 in the official `--smem_margin` / `--tmem_margin`)."""

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, attention: torch.Tensor) -> torch.Tensor:
        return memory_spread_loss(attention, self.margin)


def _normalised_keys(key: torch.Tensor, key_norm: str) -> torch.Tensor:
    """(D, M) key matrix for cosine addressing: per key vector (paper) or along the slot axis (official)."""
    if key_norm not in KEY_NORMS:
        raise ValueError(f"key_norm must be one of {KEY_NORMS}, got {key_norm!r}")
    return F.normalize(key, dim=1).t() if key_norm == "key" else F.normalize(key.t(), dim=1)


class SpatialOutput(NamedTuple):
    """`features` (N, D): GAP(f - BN(read)); `loss`: memory spread loss; `attention` (rows, M)."""

    features: torch.Tensor
    loss: torch.Tensor
    attention: torch.Tensor


class SpatialMemory(nn.Module):
    """Spatial memory (paper Eq. 1-2): a = softmax_j <q / |q|, k_j / |k_j|>, r = sum_j a_j v_j, and the refined frame
    feature f^s = GAP(f - BN(r)) subtracts what the memory reads (the scene distractor). The BN's weight and bias start
    at 0, so at initialisation f^s = GAP(f) (official init)."""

    def __init__(
        self, feat_dim: int, mem_size: int = 10, margin: float = 0.3, layout: str = "position", key_norm: str = "key"
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        _normalised_keys(torch.zeros(1, 1), key_norm)
        self.key = nn.Parameter(torch.randn(mem_size, feat_dim))
        self.val = nn.Parameter(torch.randn(mem_size, feat_dim))
        self.bn = nn.BatchNorm1d(feat_dim)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.spread = MemorySpreadLoss(margin)
        self.layout, self.key_norm = layout, key_norm

    def attention(self, query: torch.Tensor) -> torch.Tensor:
        """Addressing weights (rows, M) of an (N, D, H, W) query map, one row per query of the chosen layout."""
        n, d, h, w = query.shape
        rows = query.permute(0, 2, 3, 1).reshape(-1, d) if self.layout == "position" else query.reshape(-1, d)
        return F.softmax(F.normalize(rows, dim=1) @ _normalised_keys(self.key, self.key_norm), dim=1)

    def forward(self, query: torch.Tensor, feat: torch.Tensor) -> SpatialOutput:
        n, d, h, w = feat.shape
        attention = self.attention(query)
        read = self.bn(attention @ self.val)
        if self.layout == "position":
            read = read.reshape(n, h, w, d).permute(0, 3, 1, 2)
        else:
            read = read.reshape(n, d, h, w)
        return SpatialOutput((feat - read).mean(dim=(2, 3)), self.spread(attention), attention)


class TemporalOutput(NamedTuple):
    """`features` (B, D): frame features weighted over time; `loss`; `attention` (B, M); `weights` (B, S)."""

    features: torch.Tensor
    loss: torch.Tensor
    attention: torch.Tensor
    weights: torch.Tensor


class TemporalMemory(nn.Module):
    """Temporal memory (paper Eq. 3-4): an LSTM over the S frame queries gives the sequence query q (its last
    output); a = softmax_j <q / |q|, k_j / |k_j|>; the value memory (M x S, uniform init) stores temporal attention
    patterns, read as frame weights w = softmax_t(a V); the sequence feature is o = sum_t w_t f^s_t."""

    def __init__(
        self, feat_dim: int, mem_size: int = 5, margin: float = 0.3, seq_len: int = 6, key_norm: str = "key"
    ) -> None:
        super().__init__()
        _normalised_keys(torch.zeros(1, 1), key_norm)
        self.key = nn.Parameter(torch.randn(mem_size, feat_dim))
        self.val = nn.Parameter(torch.rand(mem_size, seq_len))
        self.lstm = nn.LSTM(feat_dim, feat_dim, num_layers=1)
        self.spread = MemorySpreadLoss(margin)
        self.seq_len, self.key_norm = seq_len, key_norm

    def forward(self, query: torch.Tensor, feat: torch.Tensor) -> TemporalOutput:
        """`query` and `feat`: (B * S, D) frame rows in sequence-major order (or (B, S, D))."""
        s = self.seq_len
        query, feat = query.reshape(-1, s, query.shape[-1]), feat.reshape(-1, s, feat.shape[-1])
        hidden, _ = self.lstm(query.transpose(0, 1))
        q = F.normalize(hidden[-1], dim=1)
        attention = F.softmax(q @ _normalised_keys(self.key, self.key_norm), dim=1)
        weights = F.softmax(attention @ self.val, dim=1)
        out = (feat * weights.unsqueeze(2)).sum(dim=1)
        return TemporalOutput(out, self.spread(attention), attention, weights)
