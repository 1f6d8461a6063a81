"""Segmentation readers on tiny files in the real layouts: VOC list formats, Cityscapes/GTA5/SYNTHIA id mappings,
layout errors, and the joint transforms."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cvlab_shared.data import synthetic_seg
from cvlab_shared.data.cache import build_once
from cvlab_shared.data.seg_transforms import eval_transform, train_transform
from cvlab_shared.data.segmentation import (
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    SYNTHIA_ID_TO_TRAINID,
    LayoutError,
    SegmentationDataset,
    ade_samples,
    cityscapes_samples,
    gta5_samples,
    lookup_table,
    read_label,
    synthia_samples,
    voc_samples,
)
from cvlab_shared.data.synthetic_seg import cached_synthetic, write_synthetic_voc
from cvlab_shared.data.synthetic_uda import write_png16, write_synthetic_uda


def save_rgb(path, height=6, width=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)


def save_grey(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


RAW_IDS = np.array([[7, 8, 11, 0, 33, 26, 1, 24]] * 6)


def test_voc_accepts_both_list_formats_and_both_val_mask_folders(tmp_path):
    base = write_synthetic_voc(tmp_path, num_train=6, num_val=3, size=32)
    dkd_format = voc_samples(tmp_path, "train_aug")  # ImageSets/Segmentation lines hold two paths
    shutil.rmtree(base / "ImageSets")
    id_format = voc_samples(base, "train_aug")  # falls back to list/ with ids
    assert dkd_format == id_format and len(id_format) == 6
    val = voc_samples(base, "val")
    assert val[0].mask.parent.name == "SegmentationClass"
    assert voc_samples(base, "val", mask_dir="SegmentationClassAug")[0].mask.parent.name == "SegmentationClassAug"
    palette, grey = read_label(val[0].mask), read_label(base / "SegmentationClassAug" / f"{val[0].name}.png")
    assert np.array_equal(palette, grey) and 255 in grey


def test_missing_layouts_name_the_expected_layout(tmp_path):
    with pytest.raises(LayoutError, match="(?s)JPEGImages.*expected layout: VOC2012"):
        voc_samples(tmp_path)
    base = write_synthetic_voc(tmp_path, num_train=3, num_val=2, size=32)
    with pytest.raises(LayoutError, match="(?s)split .trainval..*list/trainval.txt"):
        voc_samples(base, "trainval")
    (base / "SegmentationClass" / "2008_000001.png").unlink()
    with pytest.raises(LayoutError, match="(?s)missing .*2008_000001.png"):
        voc_samples(base, "val")
    with pytest.raises(LayoutError, match="ADEChallengeData2016"):
        ade_samples(tmp_path)
    with pytest.raises(LayoutError, match="leftImg8bit"):
        cityscapes_samples(tmp_path)


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    for city, frame in (("aachen", 19), ("bremen", 7)):
        save_rgb(tmp_path / "leftImg8bit" / "train" / city / f"{city}_000000_{frame:06d}_leftImg8bit.png")
        save_grey(tmp_path / "gtFine" / "train" / city / f"{city}_000000_{frame:06d}_gtFine_labelIds.png", RAW_IDS)
    samples = cityscapes_samples(tmp_path, "train")
    assert [s.name for s in samples] == ["aachen/aachen_000000_000019_leftImg8bit.png",
                                         "bremen/bremen_000000_000007_leftImg8bit.png"]  # fmt: skip
    image, mask = SegmentationDataset(samples, label_map=lookup_table(CITYSCAPES_ID_TO_TRAINID))[0]
    assert image.shape == (3, 6, 8) and image.dtype == torch.uint8
    assert mask[0].tolist() == [0, 1, 2, 255, 18, 13, 255, 11]


@pytest.mark.parametrize("nested", [False, True])
def test_gta5_flat_and_nested_layouts(tmp_path, nested):
    images = tmp_path / "GTA5" / ("images/images" if nested else "images")
    labels = tmp_path / "GTA5" / ("labels/labels" if nested else "labels")
    save_rgb(images / "00001.png")
    save_grey(labels / "00001.png", RAW_IDS)
    samples = gta5_samples(tmp_path)
    _, mask = SegmentationDataset(samples, label_map=lookup_table(CITYSCAPES_ID_TO_TRAINID))[0]
    assert mask[0].tolist() == [0, 1, 2, 255, 18, 13, 255, 11]


def test_synthia_16bit_labels_map_to_train_ids(tmp_path):
    raw = np.zeros((6, 8, 3), np.uint16)
    raw[..., 0] = [[3, 4, 2, 21, 11, 0, 1, 300]] * 6  # class ids in the first channel
    raw[..., 1] = 4321  # instance ids, ignored
    save_rgb(tmp_path / "RAND_CITYSCAPES" / "RGB" / "0000000.png")
    write_png16(tmp_path / "RAND_CITYSCAPES" / "GT" / "LABELS" / "0000000.png", raw)
    samples = synthia_samples(tmp_path)
    _, mask = SegmentationDataset(samples, label_map=lookup_table(SYNTHIA_ID_TO_TRAINID))[0]
    assert mask[0].tolist() == [0, 1, 2, 3, 18, 255, 10, 255]
    save_grey(tmp_path / "RAND_CITYSCAPES" / "GT" / "synthia_mapped_to_cityscapes" / "0000000.png", raw[..., 0] % 256)
    mapped = synthia_samples(tmp_path, labels="GT/synthia_mapped_to_cityscapes")
    assert SegmentationDataset(mapped, label_map=lookup_table(SYNTHIA_ID_TO_TRAINID))[0][1][0, :7].tolist() == [
        0, 1, 2, 3, 18, 255, 10]  # fmt: skip


def test_transforms_crop_images_and_masks_together():
    torch.manual_seed(0)
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, :, 30:] = 255
    mask = torch.zeros(40, 60, dtype=torch.int64)
    mask[:, 30:] = 7
    mask[0] = 255
    for _ in range(5):
        out_image, out_mask = train_transform(24)(image, mask)
        assert out_image.shape == (3, 24, 24) and out_image.dtype == torch.float32 and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 7, 255}
        valid = out_mask != 255  # same crop and flip: bright pixels are class 7 except along the resampled edge
        agree = ((out_image[0] > 0.5) == (out_mask == 7))[valid].float().mean()
        assert agree > 0.9
    out_image, out_mask = eval_transform(20)(image, mask)
    assert out_image.shape == (3, 20, 20) and out_mask.shape == (20, 20)
    full_image, full_mask = eval_transform(None)(image, mask)
    assert full_image.shape == (3, 40, 60) and torch.equal(full_mask, mask)
    assert full_image[0, 0, 0].item() == pytest.approx(-0.485 / 0.229, abs=1e-5)


def _pixel_counts(samples, table):
    counts = {}
    dataset = SegmentationDataset(samples, label_map=table)
    for index in range(len(dataset)):
        values, numbers = np.unique(dataset.load_mask(index), return_counts=True)
        for value, number in zip(values.tolist(), numbers.tolist(), strict=True):
            counts[str(value)] = counts.get(str(value), 0) + number
    return counts


def test_synthetic_uda_layouts_read_back_to_the_drawn_train_ids(tmp_path):
    root = write_synthetic_uda(tmp_path, num_source=12, num_target_train=8, num_target_val=4, height=24, width=48)
    record = json.loads((root / "synthetic_uda.json").read_text())["train_id_pixels"]
    cityscapes = lookup_table(CITYSCAPES_ID_TO_TRAINID)
    assert _pixel_counts(gta5_samples(root / "gta"), cityscapes) == record["gta"]
    synthia = synthia_samples(root / "synthia")
    assert _pixel_counts(synthia, lookup_table(SYNTHIA_ID_TO_TRAINID, size=65536)) == record["synthia"]
    assert not {"9", "14", "16"} & set(record["synthia"])
    train, val = cityscapes_samples(root / "cityscapes", "train"), cityscapes_samples(root / "cityscapes", "val")
    assert len(train) == 8 and len(val) == 4 and {s.name.split("/")[0] for s in train} == {"aachen", "bochum"}
    assert _pixel_counts(train, cityscapes) == record["cityscapes_train"]
    assert _pixel_counts(val, cityscapes) == record["cityscapes_val"]
    source_image, source_mask = SegmentationDataset(gta5_samples(root / "gta"), label_map=cityscapes)[0]
    target_image, target_mask = SegmentationDataset(train, label_map=cityscapes)[0]

    def deviation(image, mask):  # mean distance from the flat palette colour of each pixel's class
        keep = mask != 255
        palette = torch.from_numpy(CITYSCAPES_PALETTE[mask[keep]]).float()
        return (image.permute(1, 2, 0)[keep].float() - palette).abs().mean().item()

    assert deviation(source_image, source_mask) == 0  # sources: flat colours
    assert deviation(target_image, target_mask) > 10  # target: tinted, blurred, noisy


def test_synthetic_writers_are_deterministic(tmp_path):
    first = write_synthetic_voc(tmp_path / "a", num_train=4, num_val=2, size=32, seed=5)
    second = write_synthetic_voc(tmp_path / "b", num_train=4, num_val=2, size=32, seed=5)
    other = write_synthetic_voc(tmp_path / "c", num_train=4, num_val=2, size=32, seed=6)
    assert (first / "synthetic.json").read_text() == (second / "synthetic.json").read_text()
    assert (first / "synthetic.json").read_text() != (other / "synthetic.json").read_text()
    for name in ("JPEGImages/2007_000003.jpg", "SegmentationClass/2008_000001.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_cached_synthetic_is_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CVLAB_CACHE", str(tmp_path))
    folder = cached_synthetic("voc", num_train=4, num_val=2, size=32)
    assert folder.parent == tmp_path / "synthetic" and len(voc_samples(folder, "train_aug")) == 4

    def fail(*args, **kwargs):
        raise AssertionError("written twice")

    monkeypatch.setattr(synthetic_seg, "write_synthetic_voc", fail)
    assert cached_synthetic("voc", num_train=4, num_val=2, size=32) == folder
    uda = cached_synthetic("uda", num_train=3, num_val=2, size=16)
    assert len(gta5_samples(uda / "gta")) == 3 and len(cityscapes_samples(uda / "cityscapes", "val")) == 2
    with pytest.raises(ValueError, match="dataset"):
        cached_synthetic("coco")


def test_build_once_tolerates_a_concurrent_writer(tmp_path):
    target = tmp_path / "data"

    def racing_write(temporary):  # another process renames its copy into place first
        temporary.mkdir()
        (temporary / "mine").touch()
        target.mkdir()
        (target / "theirs").touch()

    assert build_once(target, racing_write) == target
    assert [p.name for p in tmp_path.iterdir()] == ["data"] and (target / "theirs").exists()
