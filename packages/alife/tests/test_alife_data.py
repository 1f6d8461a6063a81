"""ALIFE's data choices: the two VOC training lists must agree; val masks from SegmentationClassAug; step labels."""

import pytest

from alife.data import ALIFEDataModule, check_voc_lists
from cvlab_shared.data.segmentation import LayoutError
from cvlab_shared.data.synthetic_seg import write_synthetic_voc


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=30, num_val=6, size=32, seed=0)


def test_lists_that_disagree_are_refused(voc, tmp_path):
    check_voc_lists(voc)  # the synthetic writer keeps both lists in the same order
    ids = (voc / "list" / "train_aug.txt").read_text().split()
    bad = tmp_path / "VOC2012"
    (bad / "list").mkdir(parents=True)
    (bad / "ImageSets" / "Segmentation").mkdir(parents=True)
    (bad / "JPEGImages").mkdir()
    (bad / "list" / "train_aug.txt").write_text("\n".join(ids))
    (bad / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(reversed(ids)))
    with pytest.raises(LayoutError, match="list different images"):
        check_voc_lists(bad)


def test_val_masks_and_step_labels(voc):
    data = ALIFEDataModule("voc", str(voc), "15-5", step=1, crop_size=32, eval_crop_size=None, batch_size=2,
                           num_workers=0)
    train, val = data.samples()
    assert all(s.mask.parent.name == "SegmentationClassAug" for s in val)
    earlier = data.step_train_set(0, augment=False)
    for index in range(len(earlier)):
        assert set(earlier.load_mask(index).ravel().tolist()) <= {0, 255, *range(1, 16)}


def test_evaluation_is_sharded_without_padding_across_processes(voc):
    """Under DDP each process evaluates its own share of the test images and the shares add up to the test set once
    (the core's unpadded shard sampler; torch's DistributedSampler would repeat images)."""
    from unittest import mock

    data = ALIFEDataModule("voc", str(voc), "15-5", step=1, crop_size=32, eval_crop_size=None, batch_size=2,
                           num_workers=0)
    data.setup()
    shares = []
    for rank in (0, 1):
        with mock.patch("cvlab_shared.data.incremental_datamodule.rank_and_world", return_value=(rank, 2)):
            shares.append(list(iter(data.test_dataloader().sampler)))
    assert sorted(shares[0] + shares[1]) == list(range(len(data.test_set)))
