"""The step datamodule: masking of training labels, test masks, DKD-M replay memory."""

import pytest
import torch

from cvlab_shared.data.segmentation import read_label
from dkd.data import DKDDataModule, memory_indices


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CVLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    dm = DKDDataModule(task="15-5", step=1, memory_size=6, crop_size=32, eval_crop_size=None, batch_size=4,
                       num_workers=0, synthetic_train=60, synthetic_val=10, synthetic_size=32)
    dm.prepare_data()
    dm.setup("fit")
    yield dm
    mp.undo()


def test_training_labels_keep_only_current_classes(datamodule):
    values = set()
    for i in range(len(datamodule.train_set)):
        values |= set(torch.unique(datamodule.train_set[i][1]).tolist())
    assert values <= {0, 255, 16, 17, 18, 19, 20} and values & {16, 17, 18, 19, 20}
    test_values = set()
    for i in range(len(datamodule.test_set)):
        test_values |= set(torch.unique(datamodule.test_set[i][1]).tolist())
    assert test_values & set(range(1, 16)) and test_values & {16, 17, 18, 19, 20}


def test_memory_is_balanced_over_old_classes_and_deterministic(datamodule):
    train, _ = datamodule.samples()
    memory = datamodule.memory
    assert len(memory) == 6 and len(set(memory)) == 6
    assert memory == memory_indices(train, datamodule.task, 1, "overlap", 6)
    assert memory_indices(train, datamodule.task, 0, "overlap", 6) == []
    for index in memory:  # every memory image was a step-0 training image (it shows a class of 1..15)
        assert set(read_label(train[index].mask).ravel().tolist()) & set(range(1, 16))
    assert len(datamodule.train_set) >= 6


def test_bad_arguments():
    with pytest.raises(ValueError, match="dataset"):
        DKDDataModule(dataset="coco")
    with pytest.raises(ValueError, match="steps 0..1"):
        DKDDataModule(task="15-5", step=2)
