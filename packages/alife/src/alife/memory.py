"""ALIFE-M's feature memory (Sec. 3.2): per old class, the mean decoder feature of the class region in sampled
training images, stored as a (K, M, D) tensor (class k = row k), and the extraction that fills it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alife.rotation import CayleyRotation, rotate

MIN_AREA = 0.005  # a class counts in an image when it covers more than 0.5 % of it (extract_mem.py)


class MemoryFileError(ValueError):
    """A memory file that does not fit the model or the step."""


@dataclass
class FeatureMemory:
    """`features` (K, M, D) float32: M feature vectors for each of the classes 0..K-1 (background included)."""

    features: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.features.shape[0]

    @property
    def per_class(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes the memory holds (what ALIFE-M stores instead of images)."""
        return self.features.numel() * self.features.element_size()

    def rotated(self, rotation: torch.Tensor | CayleyRotation) -> FeatureMemory:
        """memory_k <- R_k memory_k for every class, without the centring used in training (update_mem.py): the
        (K, D, D) matrices in one bmm, or the CayleyRotation in one batched solve over classes."""
        if isinstance(rotation, torch.Tensor):
            return FeatureMemory(rotate(self.features, rotation.to(self.features)))
        with torch.no_grad():
            features = self.features.to(rotation.theta)
            if self.per_class > self.dim:  # more samples than dimensions: form R once, then one bmm (fewer flops)
                return FeatureMemory(rotate(features, rotation.matrices()).to(self.features))
            return FeatureMemory(rotation(features).to(self.features))

    def concat(self, newer: FeatureMemory) -> FeatureMemory:
        """This memory's classes followed by `newer`'s (the previously rotated memory, then the last step's classes)."""
        if newer.per_class != self.per_class or newer.dim != self.dim:
            raise MemoryFileError(f"cannot join memories of {self.per_class}x{self.dim} and {newer.per_class}x{newer.dim}")
        return FeatureMemory(torch.cat([self.features, newer.features]))

    def save(self, path: str | Path) -> None:
        from cvlab_shared.steps import save_artifact

        save_artifact({"features": self.features.cpu()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, num_classes: int | None = None, dim: int | None = None, made_by: str = "") -> FeatureMemory:
        """Read a memory file (weights_only) and check its class count and feature size."""
        path = Path(path)
        hint = f" ({made_by} writes it)" if made_by else ""
        if not path.exists():
            raise MemoryFileError(f"missing feature memory {path}{hint}")
        stored = torch.load(path, map_location="cpu", weights_only=True)
        features = stored.get("features") if isinstance(stored, dict) else None
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            raise MemoryFileError(f"{path} is not a feature memory: expected {{'features': tensor (K, M, D)}}{hint}")
        if dim is not None and features.shape[2] != dim:
            raise MemoryFileError(f"{path} holds {features.shape[2]}-d features but the model's are {dim}-d{hint}")
        if num_classes is not None and features.shape[0] != num_classes:
            raise MemoryFileError(f"{path} holds {features.shape[0]} classes, this step needs {num_classes}{hint}")
        return cls(features.float())


def class_region_means(
    feature: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor, min_area: float = MIN_AREA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of class `classes[n]`'s region in image n (extract_mem.py): the (N, D, h, w) features are
    upsampled bilinearly (align_corners) to the (N, H, W) mask; returns (N, D) means and an (N,) bool `valid`
    (region larger than `min_area` of the image)."""
    up = F.interpolate(feature, size=mask.shape[-2:], mode="bilinear", align_corners=True)
    region = (mask == classes.view(-1, 1, 1)).to(up.dtype)
    area = region.flatten(1).sum(dim=1)
    means = torch.einsum("ndhw,nhw->nd", up, region) / area.clamp_min(1).unsqueeze(1)
    return means, area > min_area * mask[0].numel()


def sampling_plan(
    eligible: list[np.ndarray], counts: list[int], seed: int, round_index: int = 0
) -> list[tuple[int, int]]:
    """(class position, image index) pairs: `counts[k]` draws with replacement among class k's eligible images."""
    rng = np.random.default_rng([seed, round_index])
    plan = []
    for position, (images, count) in enumerate(zip(eligible, counts)):
        plan += [(position, int(i)) for i in rng.choice(images, count, replace=True)]
    return plan
