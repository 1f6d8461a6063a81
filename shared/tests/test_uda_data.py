"""UDA protocols: synthetic GTA5/SYNTHIA/Cityscapes read back through the real readers, the domains differ, bad layouts
fail with one message, and mIoU16/13 follow the SYNTHIA protocol."""

import numpy as np
import pytest
import torch
from PIL import Image

from cvlab_shared.data.segmentation import LayoutError, SegmentationDataset, read_image
from cvlab_shared.data.synthetic_uda import write_synthetic_uda
from cvlab_shared.data.uda import source_samples, target_samples
from cvlab_shared.metrics.uda import MIOU13_CLASSES, MIOU16_CLASSES, uda_scores


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_uda(tmp_path_factory.mktemp("uda"), 8, 6, 4, height=24, width=48)


def _train_ids(samples, table):
    data = SegmentationDataset(samples, label_map=table)
    return set().union(*(set(np.unique(data.load_mask(i)).tolist()) for i in range(len(data))))


def test_sources_and_target_map_to_train_ids(root):
    gta, gta_table = source_samples("gta5", root / "gta")
    synthia, synthia_table = source_samples("synthia", root / "synthia")
    city, city_table = target_samples(root / "cityscapes", "val")
    assert len(gta) == 8 and len(synthia) == 8 and len(city) == 4
    for ids in (_train_ids(gta, gta_table), _train_ids(synthia, synthia_table), _train_ids(city, city_table)):
        assert ids <= set(range(19)) | {255} and {0, 10} <= ids
    assert not _train_ids(synthia, synthia_table) & {9, 14, 16}


def test_target_palette_and_texture_differ_from_source(root):
    gta, table = source_samples("gta5", root / "gta")
    city, _ = target_samples(root / "cityscapes", "train")
    sky_source = [read_image(s.image)[:, SegmentationDataset([s], label_map=table).load_mask(0) == 10] for s in gta]
    sky_target = [read_image(s.image)[:, SegmentationDataset([s], label_map=table).load_mask(0) == 10] for s in city]
    source = torch.cat(sky_source, 1).float()
    target = torch.cat(sky_target, 1).float()
    assert source.std(1).max() == 0  # flat colour
    assert target.std(1).min() > 3  # texture and noise
    assert (source.mean(1) - target.mean(1)).abs().max() > 15  # another colour


def test_cityscapes_without_gtfine(root, tmp_path):
    (tmp_path / "leftImg8bit").symlink_to(root / "cityscapes" / "leftImg8bit")
    with pytest.raises(LayoutError, match="no gtFine/val under"):
        target_samples(tmp_path, "val")


def test_synthia_label_format_checked(root, tmp_path):
    with pytest.raises(LayoutError, match="16-bit colour PNG in GT/synthia_mapped_to_cityscapes"):
        bad = tmp_path / "s1"
        (bad / "GT").mkdir(parents=True)
        (bad / "RGB").symlink_to(root / "synthia" / "RAND_CITYSCAPES" / "RGB")
        (bad / "GT" / "synthia_mapped_to_cityscapes").symlink_to(root / "synthia" / "RAND_CITYSCAPES" / "GT" / "LABELS")
        source_samples("synthia", bad, "GT/synthia_mapped_to_cityscapes")
    eight = tmp_path / "s2"
    (eight / "GT" / "LABELS").mkdir(parents=True)
    (eight / "RGB").symlink_to(root / "synthia" / "RAND_CITYSCAPES" / "RGB")
    for image in (eight / "RGB").iterdir():
        Image.fromarray(np.zeros((24, 48), np.uint8)).save(eight / "GT" / "LABELS" / image.name)
    with pytest.raises(LayoutError, match="GT/LABELS files are 16-bit colour PNGs"):
        source_samples("synthia", eight)
    (eight / "GT" / "synthia_mapped_to_cityscapes").symlink_to(eight / "GT" / "LABELS")
    assert len(source_samples("synthia", eight, "GT/synthia_mapped_to_cityscapes")[0]) == 8


def test_miou16_and_13():
    iou = torch.arange(19, dtype=torch.float64)
    scores = uda_scores(iou)
    assert len(MIOU16_CLASSES) == 16 and len(MIOU13_CLASSES) == 13
    assert scores["mIoU19"] == pytest.approx(9.0)
    assert scores["mIoU16"] == pytest.approx((171 - 9 - 14 - 16) / 16)
    assert scores["mIoU13"] == pytest.approx((171 - 9 - 14 - 16 - 3 - 4 - 5) / 13)
    missing_three = torch.where(torch.isin(torch.arange(19), torch.tensor([9, 14, 16])), 0.0, 50.0)
    assert uda_scores(missing_three)["mIoU16"] == pytest.approx(uda_scores(missing_three)["mIoU19"] * 19 / 16)
