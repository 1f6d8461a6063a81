"""Joint image/mask transforms for segmentation (torchvision v2: bilinear for images, nearest for masks).

Training: `RandomResizedCrop(crop, scale=(0.5, 2.0))` + horizontal flip + ImageNet normalisation, as in DKD/SSUL
(the area scale follows torchvision's sampling: draws whose crop would exceed the image are re-drawn, after ten
failures a centre crop is used). Evaluation: the official protocol of DKD/ALIFE resizes the short side to `crop`
and takes the centre `crop x crop` patch; `crop_size=None` evaluates the full image instead.
A transform maps `(image uint8 [3,H,W], mask int64 [H,W])` to `(image float32 [3,h,w], mask int64 [h,w])`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class JointTransform:
    """Applies one torchvision v2 pipeline to an image and its mask together (same crop, same flip)."""

    def __init__(self, ops: Sequence[v2.Transform]) -> None:
        self.ops = v2.Compose(list(ops))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_image, out_mask = self.ops(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).long()

    def __repr__(self) -> str:
        return f"JointTransform({self.ops})"


def _to_normalized_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def train_transform(
    crop_size: int = 512,
    scale: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> JointTransform:
    """Random resized crop (area `scale`), optional horizontal flip, normalisation."""
    ops: list[v2.Transform] = [v2.RandomResizedCrop(crop_size, scale=scale)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return JointTransform(ops + _to_normalized_float(mean, std))


def eval_transform(
    crop_size: int | None = 512,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> JointTransform:
    """Short side resized to `crop_size` then centre crop (official protocol); `None` keeps the full image."""
    ops: list[v2.Transform] = [] if crop_size is None else [v2.Resize(crop_size), v2.CenterCrop(crop_size)]
    return JointTransform(ops + _to_normalized_float(mean, std))


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Inverse of the normalisation: float [..., 3, H, W] in [0, 1] (for pictures)."""
    mean_t = torch.tensor(mean, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, device=image.device).view(3, 1, 1)
    return (image * std_t + mean_t).clamp(0, 1)
