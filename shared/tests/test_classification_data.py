"""Classification readers end to end on synthetic folders in the real layouts; digits; layout errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cvlab_shared.data.classification import (
    DatasetLayoutError,
    load_digits_splits,
    read_cifar,
    read_image_folder,
    read_tiny_imagenet,
    stratified_holdout,
)
from cvlab_shared.data.classification_datamodule import ClassificationDataModule
from cvlab_shared.data.samplers import ShuffledShardSampler, UnpaddedShardSampler
from cvlab_shared.data.synthetic_classification import (
    write_synthetic_cifar,
    write_synthetic_image_folder,
    write_synthetic_tiny_imagenet,
)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reader_and_datamodule(tmp_path, name, classes):
    write_synthetic_cifar(tmp_path, name, train_per_class=5, test_per_class=2)
    train = read_cifar(tmp_path, name, train=True)
    assert train.images.shape == (5 * classes, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [5] * classes
    dm = ClassificationDataModule(name, data_root=str(tmp_path), batch_size=10, val_fraction=0.2)
    dm.setup()
    assert len(dm.splits["val"]) == classes and len(dm.splits["test"]) == 2 * classes
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.max() < classes
    val, test = dm.test_dataloader()
    assert sum(len(b[1]) for b in test) == 2 * classes


def test_tiny_imagenet_reader(tmp_path):
    write_synthetic_tiny_imagenet(tmp_path, num_classes=3, train_per_class=4, val_per_class=2, size=16)
    train = read_tiny_imagenet(tmp_path, "train")
    val = read_tiny_imagenet(tmp_path / "tiny-imagenet-200", "val")
    assert len(train.samples) == 12 and len(val.samples) == 6 and train.classes == val.classes
    dm = ClassificationDataModule(
        "tiny_imagenet", data_root=str(tmp_path), batch_size=4, val_fraction=0.25, image_size=16
    )
    assert dm.num_classes == 3
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16)


def test_image_folder(tmp_path):
    write_synthetic_image_folder(tmp_path, num_classes=2, train_per_class=4, test_per_class=2, size=8)
    split = read_image_folder(tmp_path, "test", classes=read_image_folder(tmp_path).classes)
    assert split.labels.tolist() == [0, 0, 1, 1]
    dm = ClassificationDataModule("imagefolder", data_root=str(tmp_path), batch_size=2, image_size=8)
    assert dm.num_classes == 2 and next(iter(dm.val_dataloader()))[0].shape == (2, 3, 8, 8)


def test_layout_errors_name_the_layout_and_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match=f"cifar-10-batches-py.*|{tmp_path}") as err:
        read_cifar(tmp_path, "cifar10")
    assert str(tmp_path) in str(err.value) and "data_batch_1" in str(err.value)
    with pytest.raises(DatasetLayoutError, match="val_annotations.txt"):
        read_tiny_imagenet(tmp_path)
    (tmp_path / "tiny-imagenet-200" / "train" / "n1" / "images").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no images in the train split"):
        read_tiny_imagenet(tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="<class>"):
        read_image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="needs --data.data_root"):
        ClassificationDataModule("cifar10")
    with pytest.raises(ValueError, match="unknown dataset"):
        ClassificationDataModule("mnist")


def test_digits_fixed_split_and_noise():
    clean = load_digits_splits()
    noisy = load_digits_splits(noise=0.5)
    assert clean["train"].images.shape == (1078, 1, 8, 8) and clean["test"].images.shape == (719, 1, 8, 8)
    np.testing.assert_array_equal(clean["test"].labels, noisy["test"].labels)
    np.testing.assert_array_equal(noisy["train"].images, load_digits_splits(noise=0.5)["train"].images)
    diff = noisy["train"].images - clean["train"].images
    assert abs(diff.std() - 0.5) < 0.01
    keep, held = stratified_holdout(clean["train"].labels, 0.2, seed=1)
    assert len(set(keep) & set(held)) == 0 and len(keep) + len(held) == 1078
    assert np.bincount(clean["train"].labels[held]).min() >= 20


def test_shard_samplers_cover_the_single_process_batches():
    data = list(range(20))
    single = list(ShuffledShardSampler(data, 1, 0, seed=3))
    ranks = [list(ShuffledShardSampler(data, 2, r, seed=3)) for r in (0, 1)]
    # global batch k of size 4 = rank batches k of size 2
    for k in range(5):
        assert sorted(single[4 * k : 4 * k + 4]) == sorted(ranks[0][2 * k : 2 * k + 2] + ranks[1][2 * k : 2 * k + 2])
    shards = [list(UnpaddedShardSampler(list(range(7)), 2, r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(7)) and len(UnpaddedShardSampler(range(7), 2, 1)) == 3



def test_batch_size_is_per_process_and_two_ranks_of_b_equal_one_process_of_2b():
    def loader(batch_size: int, world: int, rank: int):
        dm = ClassificationDataModule("digits", batch_size=batch_size, val_fraction=0.2)
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        return dm.train_dataloader()

    ranks = [loader(8, 2, r) for r in (0, 1)]
    assert [r.batch_size for r in ranks] == [8, 8]
    single = list(loader(16, 1, 0))
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for (x, y), a, b in zip(single, *ranks):
        assert len(a[1]) == len(b[1]) == len(y) // 2
        rows = lambda images, labels: sorted(zip(labels.tolist(), images.flatten(1).tolist()))  # noqa: E731
        assert rows(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) == rows(x, y)
