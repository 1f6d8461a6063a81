"""Offline ("static") target pseudo labels of the self-training rounds, with class-balanced confidence thresholds.

Round r trains on pseudo labels written by the model that finished round r - 1 (round 0: the source-only model), as
in the release's rounds (research segmentation.md section 2.3). A pixel keeps its arg-max class when its confidence
reaches the class's threshold (the confidence at the top `class_proportion` of the pixels predicted as that class,
over the whole target training set) or lies in its image's top `image_proportion` most confident pixels; other
pixels are 255. Classes listed in `excluded` (SYNTHIA: 9, 14, 16) are never pseudo-labelled.
Files: `<run_dir>/round_<r>/pseudo_labels/<name>.png` (8-bit train ids), one per target training image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bpcl_uda.losses import IGNORE_INDEX


def class_balanced_thresholds(
    confidence: torch.Tensor,
    prediction: torch.Tensor,
    num_classes: int,
    proportion: float = 0.1,
    excluded: Sequence[int] = (),
) -> torch.Tensor:
    """Per-class thresholds [K]: the confidence of rank floor(n_k * proportion) among the n_k pixels predicted as
    k, sorted from most to least confident; +inf for classes never predicted or `excluded`."""
    thresholds = torch.full((num_classes,), float("inf"), dtype=torch.float64)
    confidence, prediction = confidence.reshape(-1).double(), prediction.reshape(-1)
    for k in range(num_classes):
        if k in excluded:
            continue
        values = confidence[prediction == k]
        if values.numel():
            ranked = values.sort(descending=True).values
            thresholds[k] = ranked[min(int(values.numel() * proportion), values.numel() - 1)]
    return thresholds


def select_pseudo_labels(
    confidence: torch.Tensor,
    prediction: torch.Tensor,
    thresholds: torch.Tensor,
    image_proportion: float = 0.1,
    excluded: Sequence[int] = (),
) -> torch.Tensor:
    """Pseudo label [H, W] of one image: arg-max where confident for its class or in the image's top share."""
    keep = confidence.double() >= thresholds.to(confidence.device)[prediction]
    if image_proportion > 0:
        ranked = confidence.reshape(-1).sort(descending=True).values
        cut = ranked[min(int(ranked.numel() * image_proportion), ranked.numel() - 1)]
        keep |= confidence >= cut
    if excluded:
        keep &= ~torch.isin(prediction, torch.tensor(list(excluded), device=prediction.device))
    return torch.where(keep, prediction, IGNORE_INDEX)


def round_dir(run_dir: Path, round_index: int) -> Path:
    return Path(run_dir) / f"round_{round_index}"


def pseudo_label_dir(run_dir: Path, round_index: int) -> Path:
    return round_dir(run_dir, round_index) / "pseudo_labels"


def pseudo_label_path(folder: Path, name: str) -> Path:
    """`name` is the sample's id (`<city>/<file>` for Cityscapes); the file keeps the city sub-folder."""
    return Path(folder) / f"{Path(name).with_suffix('')}.png"


def write_pseudo_labels(
    folder: Path,
    names: Sequence[str],
    outputs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    class_proportion: float = 0.1,
    image_proportion: float = 0.1,
    excluded: Sequence[int] = (),
) -> dict[str, float]:
    """Write one pseudo-label PNG per image from (confidence [H, W], prediction [H, W]) pairs in `names` order;
    returns the share of labelled pixels and the thresholds used."""
    pairs = [(c.cpu(), p.cpu()) for c, p in outputs]
    if len(pairs) != len(names):
        raise ValueError(f"{len(pairs)} predictions for {len(names)} images")
    all_conf = torch.cat([c.reshape(-1) for c, _ in pairs])
    all_pred = torch.cat([p.reshape(-1) for _, p in pairs])
    thresholds = class_balanced_thresholds(all_conf, all_pred, num_classes, class_proportion, excluded)
    labelled = 0
    for name, (conf, pred) in zip(names, pairs, strict=True):
        label = select_pseudo_labels(conf, pred, thresholds, image_proportion, excluded)
        labelled += int((label != IGNORE_INDEX).sum())
        path = pseudo_label_path(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label.numpy().astype(np.uint8)).save(path)
    (Path(folder) / "done").touch()
    return {"labelled_share": labelled / max(1, all_pred.numel()), "thresholds": thresholds.tolist()}


def require_pseudo_labels(folder: Path, round_index: int) -> Path:
    """The pseudo-label folder of a round, or one clear error naming what is missing and what writes it."""
    folder = Path(folder)
    if not (folder / "done").exists():
        writer = "the source-only model" if round_index == 0 else f"the model of round {round_index - 1}"
        raise FileNotFoundError(
            f"round {round_index} needs the pseudo labels written by {writer}: {folder} is missing or incomplete "
            f"(run the earlier round first, e.g. `bpcl-uda train` without --round)"
        )
    return folder
