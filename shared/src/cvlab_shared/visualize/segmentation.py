"""Side-by-side segmentation pictures: image | ground truth | prediction, one row per image, VOC colour map.

`save_segmentation_grid(path, images, targets, preds)` takes a validation batch as the model sees it (normalised
float images [N, 3, H, W] or uint8) and class-id masks [N, H, W]; 255 (ignore) is drawn in the VOC void colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cvlab_shared.data.seg_transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
from cvlab_shared.data.segmentation import voc_palette


def colorize(mask: torch.Tensor | np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Class ids [H, W] -> RGB uint8 [H, W, 3] through `palette` (default: the VOC colour map, 256 entries)."""
    palette = voc_palette() if palette is None else palette
    ids = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return palette[np.clip(ids, 0, len(palette) - 1)]


def _as_rgb(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else denormalize(image.float(), mean, std)
    return image.permute(1, 2, 0).numpy()


def save_segmentation_grid(
    path: str | Path,
    images: torch.Tensor,
    targets: torch.Tensor,
    preds: torch.Tensor,
    max_images: int = 4,
    palette: np.ndarray | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    title: str | None = None,
) -> Path:
    """Write a PNG with up to `max_images` rows of image, ground truth and prediction; returns the path."""
    count = min(max_images, len(images))
    if count == 0:
        raise ValueError("no images to draw")
    aspect = images.shape[-2] / images.shape[-1]
    figure = Figure(figsize=(9, 3 * aspect * count + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(count, 3, squeeze=False)
    for row in range(count):
        panels = (_as_rgb(images[row], mean, std), colorize(targets[row], palette), colorize(preds[row], palette))
        for column, (panel, label) in enumerate(zip(panels, ("image", "ground truth", "prediction"), strict=True)):
            axes[row, column].imshow(panel, interpolation="nearest")
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(label)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
