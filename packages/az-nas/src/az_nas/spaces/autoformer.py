"""AutoFormer ViT search space (Chen et al., "AutoFormer", ICCV 2021, Table 1), as AZ-NAS searches it.

A candidate is an embedding dimension shared by all blocks, a depth, and per block an MLP ratio and a number of
heads (64 channels per head, so the Q-K-V width is 64 x heads). The network is a plain pre-norm ViT: 16x16 patch
embedding, class token, absolute position embedding, blocks x + attn(LN(x)) then x + mlp(LN(x)), final LayerNorm
and a linear head on the class token, initialised like a ViT: truncated normal with std 0.02 for the linear layers,
the position embedding and the class token; the patch convolution keeps PyTorch's default. AZ-NAS draws random
candidates whose parameter count (at 224 px, 1000 classes) falls in a window and keeps the best by aggregated rank.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass

import torch
from torch import nn

HEAD_DIM = 64
PATCH = 16


@dataclass(frozen=True)
class ViTConfig:
    """One candidate: shared `embed_dim`, per-block `mlp_ratio` and `num_heads` (their length is the depth)."""

    embed_dim: int
    mlp_ratio: tuple[float, ...]
    num_heads: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.mlp_ratio) != len(self.num_heads) or not self.mlp_ratio:
            raise ValueError(
                f"mlp_ratio and num_heads need one entry per block, got {self.mlp_ratio}, {self.num_heads}"
            )

    @property
    def depth(self) -> int:
        return len(self.num_heads)

    def hidden(self, block: int) -> int:
        """Width of the MLP of `block` (int(embed_dim * ratio), as in AutoFormer)."""
        return int(self.embed_dim * self.mlp_ratio[block])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> ViTConfig:
        data = json.loads(text)
        return ViTConfig(data["embed_dim"], tuple(data["mlp_ratio"]), tuple(data["num_heads"]))


@dataclass(frozen=True)
class AutoFormerSpace:
    """Choice sets of one AutoFormer supernet and the parameter window AZ-NAS searches in (inclusive, in params)."""

    name: str
    embed_dim: tuple[int, ...]
    depth: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    num_heads: tuple[int, ...]
    min_params: float
    max_params: float

    def sample(self, rng: random.Random) -> ViTConfig:
        """Uniform draw: a depth, one embedding dimension, then an MLP ratio and a head count per block."""
        depth = rng.choice(self.depth)
        embed = rng.choice(self.embed_dim)
        ratios = tuple(rng.choice(self.mlp_ratio) for _ in range(depth))
        heads = tuple(rng.choice(self.num_heads) for _ in range(depth))
        return ViTConfig(embed, ratios, heads)

    def contains(self, config: ViTConfig) -> bool:
        return (
            config.embed_dim in self.embed_dim
            and config.depth in self.depth
            and set(config.mlp_ratio) <= set(self.mlp_ratio)
            and set(config.num_heads) <= set(self.num_heads)
        )

    def in_window(self, config: ViTConfig) -> bool:
        return self.min_params <= vit_params(config) <= self.max_params


# AutoFormer Table 1 as the official space files give it (Base heads 9 and 10: experiments/search_space/space-B.yaml);
# windows from the AZ-NAS search script (Tiny 4-6 M, Small 21-23 M, Base 52-54 M).
SPACES = {
    "tiny": AutoFormerSpace("tiny", (192, 216, 240), (12, 13, 14), (3.5, 4.0), (3, 4), 4e6, 6e6),
    "small": AutoFormerSpace("small", (320, 384, 448), (12, 13, 14), (3.0, 3.5, 4.0), (5, 6, 7), 21e6, 23e6),
    "base": AutoFormerSpace("base", (528, 576, 624), (14, 15, 16), (3.0, 3.5, 4.0), (9, 10), 52e6, 54e6),
}


def sample_in_window(space: AutoFormerSpace, n: int, seed: int, max_draws: int = 1000) -> list[ViTConfig]:
    """`n` distinct uniform draws whose parameter count lies in the space's window (rejection sampling)."""
    rng, seen = random.Random(seed), {}
    for _ in range(max_draws * n):
        if len(seen) == n:
            break
        config = space.sample(rng)
        if config not in seen and space.in_window(config):
            seen[config] = None
    if len(seen) < n:
        raise ValueError(f"found only {len(seen)} of {n} distinct {space.name} candidates in the window "
                         f"[{space.min_params:.3g}, {space.max_params:.3g}] after {max_draws * n} draws")
    return list(seen)


def vit_params(config: ViTConfig, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3) -> int:
    """Exact parameter count of `VisionTransformer(config, image_size, num_classes)`."""
    d, tokens = config.embed_dim, (image_size // PATCH) ** 2 + 1
    total = in_channels * PATCH * PATCH * d + d + tokens * d + d  # patch embedding, position embedding, class token
    for i in range(config.depth):
        qkv, hidden = HEAD_DIM * config.num_heads[i], config.hidden(i)
        total += 4 * d  # two LayerNorms
        total += d * 3 * qkv + 3 * qkv + qkv * d + d  # qkv and output projection
        total += d * hidden + hidden + hidden * d + d  # MLP
    return total + 2 * d + d * num_classes + num_classes  # final LayerNorm and head


def vit_flops(config: ViTConfig, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3) -> float:
    """Multiply-accumulates of one image: linear/conv layers (bias included) plus the two attention products.

    Counted like `count_flops` for the layers, plus 2 * N^2 * (64 * heads) per block for Q K^T and A V
    (AutoFormer's own complexity also counts both products); the head sees the class token only.
    """
    d, patches = config.embed_dim, (image_size // PATCH) ** 2
    n = patches + 1
    total = patches * d * (in_channels * PATCH * PATCH + 1)
    for i in range(config.depth):
        qkv, hidden = HEAD_DIM * config.num_heads[i], config.hidden(i)
        total += n * (3 * qkv * (d + 1) + d * (qkv + 1) + hidden * (d + 1) + d * (hidden + 1))
        total += 2 * n * n * qkv
    return float(total + num_classes * (d + 1))


class Residual(nn.Module):
    """Pre-norm residual branch x + f(LN(x)); its output is one point of the residual stream."""

    def __init__(self, dim: int, body: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(self.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention with `heads` heads of 64 channels (AutoFormer's Q-K-V width = 64 x heads)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * heads * HEAD_DIM)
        self.proj = nn.Linear(heads * HEAD_DIM, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * HEAD_DIM))


class VisionTransformer(nn.Module):
    """The ViT of one candidate; `feature_blocks()` = the attention and MLP residual branches of every block."""

    def __init__(self, config: ViTConfig, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        if image_size % PATCH:
            raise ValueError(f"image size must be a multiple of {PATCH}, got {image_size}")
        d = config.embed_dim
        self.config = config
        self.patch_embed = nn.Conv2d(in_channels, d, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // PATCH) ** 2 + 1, d))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                Residual(d, Attention(d, config.num_heads[i])),
                Residual(d, nn.Sequential(nn.Linear(d, config.hidden(i)), nn.GELU(), nn.Linear(config.hidden(i), d))),
            )
            for i in range(config.depth)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT initialisation: truncated normal std 0.02 (linear weights, embeddings), zero biases, LayerNorm 1/0."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_blocks(self) -> list[nn.Module]:
        """Residual stream after attention and after the MLP of each block (AZ-NAS's ViT features)."""
        return [branch for block in self.blocks for branch in block]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the normalised tokens (B, 1 + H W / 256, embed_dim)."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])
