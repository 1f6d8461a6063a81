"""Source and target sample lists of the UDA segmentation protocols (GTA5 / SYNTHIA -> Cityscapes), checked up front.

`source_samples("gta5" | "synthia", root)` returns the samples and the label lookup table to the 19 Cityscapes
train ids; `target_samples(root, split)` the Cityscapes ones. Problems are reported as one `LayoutError` naming the
folder or file and the expected layout: a Cityscapes root without `gtFine/<split>`, SYNTHIA labels in the wrong
format for the chosen label folder (`GT/LABELS` holds 16-bit colour PNGs with the class id in the first channel;
`GT/synthia_mapped_to_cityscapes` 8-bit single-channel ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cvlab_shared.data.segmentation import (
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_LAYOUT,
    SYNTHIA_ID_TO_TRAINID,
    SYNTHIA_LAYOUT,
    LayoutError,
    SegSample,
    _find_root,
    _is_16bit_colour_png,
    cityscapes_samples,
    gta5_samples,
    lookup_table,
    synthia_samples,
)

SOURCES = ("gta5", "synthia")
SYNTHIA_LABEL_DIRS = ("GT/LABELS", "GT/synthia_mapped_to_cityscapes")


def check_synthia_label_format(path: Path, labels: str) -> None:
    """Raise LayoutError unless `path` has the format of SYNTHIA's `labels` folder."""
    sixteen = _is_16bit_colour_png(path)
    if labels == "GT/LABELS" and not sixteen:
        with Image.open(path) as image:
            mode = image.mode
        raise LayoutError(
            f"{path}: SYNTHIA GT/LABELS files are 16-bit colour PNGs (class id in the first channel), got an image "
            f"of mode {mode}; for 8-bit id maps use the folder GT/synthia_mapped_to_cityscapes "
            f"(data option synthia_labels)\nexpected layout: {SYNTHIA_LAYOUT}"
        )
    if labels != "GT/LABELS" and sixteen:
        raise LayoutError(
            f"{path}: a 16-bit colour PNG in {labels}, which holds 8-bit single-channel SYNTHIA ids; 16-bit colour "
            f"labels belong to GT/LABELS (data option synthia_labels)\nexpected layout: {SYNTHIA_LAYOUT}"
        )


def source_samples(
    dataset: str, root: str | Path, synthia_labels: str = "GT/LABELS"
) -> tuple[list[SegSample], np.ndarray]:
    """(samples, label lookup table to train ids) of a UDA source dataset ('gta5' or 'synthia')."""
    if dataset == "gta5":
        return gta5_samples(root), lookup_table(CITYSCAPES_ID_TO_TRAINID)
    if dataset == "synthia":
        if synthia_labels not in SYNTHIA_LABEL_DIRS:
            raise ValueError(f"synthia_labels must be one of {SYNTHIA_LABEL_DIRS}, got {synthia_labels!r}")
        samples = synthia_samples(root, synthia_labels)
        check_synthia_label_format(samples[0].mask, synthia_labels)
        return samples, lookup_table(SYNTHIA_ID_TO_TRAINID, size=65536)
    raise ValueError(f"source dataset must be one of {SOURCES}, got {dataset!r}")


def target_samples(root: str | Path, split: str = "train") -> tuple[list[SegSample], np.ndarray]:
    """(samples, label lookup table) of Cityscapes `split`; a root without `gtFine/<split>` is a LayoutError."""
    base = _find_root(root, "leftImg8bit", ["cityscapes"], CITYSCAPES_LAYOUT)
    if not (base / "gtFine" / split).is_dir():
        raise LayoutError(
            f"no gtFine/{split} under {base} (Cityscapes fine labels)\nexpected layout: {CITYSCAPES_LAYOUT}"
        )
    return cityscapes_samples(base, split), lookup_table(CITYSCAPES_ID_TO_TRAINID)
