"""Class-incremental protocol: task splits, selection filters, masking, cached label index, replay memory.

The filters are checked against a plain per-image reference on ShapesVOC/ShapesADE (the generator's own record of
each mask's labels), and against DKD's shipped per-step counts on real VOC/ADE when CVLAB_VOC_ROOT /
CVLAB_ADE_ROOT point at the datasets.
"""

import json
import os

import numpy as np
import pytest

from cvlab_shared.data import incremental
from cvlab_shared.data.incremental import (
    IncrementalTask,
    LabelIndex,
    class_balanced_memory,
    eval_label_map,
    incremental_datasets,
    select_eval,
    select_train,
    train_label_map,
)
from cvlab_shared.data.segmentation import ade_samples, voc_samples
from cvlab_shared.data.synthetic_seg import write_synthetic_ade, write_synthetic_voc

VOC_TASKS = ["19-1", "15-5", "15-1", "10-1", "5-3"]
ADE_TASKS = ["100-50", "100-10", "50-50", "100-5"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = write_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=160, num_val=60, size=48, seed=3)
    record = json.loads((root / "synthetic.json").read_text())["labels"]
    cache = tmp_path_factory.mktemp("cache")
    train, val = voc_samples(root, "train_aug"), voc_samples(root, "val")
    return {"root": root, "record": record, "cache": cache, "train": train, "val": val}


def reference_train(labels: list[set[int]], task: IncrementalTask, step: int, setting: str) -> list[int]:
    """Section 3.2 written per image: any class of C_t, and for disjoint nothing outside C_{0:t} + {0, 255}."""
    new, allowed = set(task.new_classes(step)), set(task.seen_classes(step)) | {0, 255}
    return [i for i, s in enumerate(labels) if s & new and (setting == "overlap" or s <= allowed)]


def reference_test(labels: list[set[int]], task: IncrementalTask, step: int) -> list[int]:
    return [i for i, s in enumerate(labels) if s & set(task.seen_classes(step))]


def test_task_schedules_match_the_published_splits():
    assert IncrementalTask.from_name("15-5").steps == (tuple(range(1, 16)), tuple(range(16, 21)))
    assert IncrementalTask.from_name("15-1").steps[1:] == ((16,), (17,), (18,), (19,), (20,))
    assert IncrementalTask.from_name("15-5s") == IncrementalTask.from_name("15-1")
    five_three = IncrementalTask.from_name("5-3")
    assert five_three.steps[1:] == ((6, 7, 8), (9, 10, 11), (12, 13, 14), (15, 16, 17), (18, 19, 20))
    assert [IncrementalTask.from_name(t).num_steps for t in VOC_TASKS] == [2, 2, 6, 11, 6]
    assert [IncrementalTask.from_name(t, "ade").num_steps for t in ADE_TASKS] == [2, 6, 3, 11]
    assert IncrementalTask.from_name("50", "ade").steps[2] == tuple(range(101, 151))
    task = IncrementalTask.from_name("15-1")
    assert task.metric_groups(3) == ([0, *range(1, 16)], [16, 17, 18])
    assert task.num_outputs(2) == 18 and task.old_classes(2) == list(range(1, 17))
    with pytest.raises(ValueError, match="does not split"):
        IncrementalTask.from_name("15-4")
    with pytest.raises(ValueError, match="form"):
        IncrementalTask.from_name("15-1_b")
    with pytest.raises(ValueError, match="steps 0..1"):
        IncrementalTask.from_name("19-1").new_classes(2)


def test_label_index_reads_what_the_generator_drew(voc):
    index = LabelIndex.build(voc["train"], voc["cache"])
    assert index.names == tuple(voc["record"]["train_aug"])
    for row, name in zip(index.presence, index.names, strict=True):
        assert np.flatnonzero(row).tolist() == voc["record"]["train_aug"][name]


def test_label_index_is_cached(voc, monkeypatch):
    first = LabelIndex.build(voc["val"], voc["cache"])

    def fail(path):
        raise AssertionError("mask read again although the index is cached")

    monkeypatch.setattr(incremental, "_presence_row", fail)
    again = LabelIndex.build(voc["val"], voc["cache"])
    assert np.array_equal(first.presence, again.presence)
    with pytest.raises(AssertionError, match="read again"):
        LabelIndex.build(voc["val"], voc["cache"], use_cache=False)
    touched = voc["val"][0].mask
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="read again"):  # a rewritten mask invalidates the cache
        LabelIndex.build(voc["val"], voc["cache"])


@pytest.mark.parametrize("name", VOC_TASKS)
def test_selection_matches_the_per_image_rule(voc, name):
    task = IncrementalTask.from_name(name)
    train_sets = [set(v) for v in voc["record"]["train_aug"].values()]
    val_sets = [set(v) for v in voc["record"]["val"].values()]
    train_index = LabelIndex.build(voc["train"], voc["cache"])
    val_index = LabelIndex.build(voc["val"], voc["cache"])
    for step in range(task.num_steps):
        for setting in ("overlap", "disjoint"):
            got = select_train(train_index.presence, task, step, setting).tolist()
            assert got == reference_train(train_sets, task, step, setting)
        assert select_eval(val_index.presence, task, step).tolist() == reference_test(val_sets, task, step)


def test_overlapped_and_disjoint_differ_on_the_synthetic_data(voc):
    presence = LabelIndex.build(voc["train"], voc["cache"]).presence
    task = IncrementalTask.from_name("15-5")
    overlap, disjoint = select_train(presence, task, 0, "overlap"), select_train(presence, task, 0, "disjoint")
    assert set(disjoint) < set(overlap) and len(disjoint) < 0.9 * len(overlap)
    assert np.array_equal(select_train(presence, task, 1, "overlap"), select_train(presence, task, 1, "disjoint"))


def test_masking_of_train_and_test_labels():
    task = IncrementalTask.from_name("15-1")
    train = train_label_map(task, 2)
    assert train[17] == 17 and train[0] == 0 and train[255] == 255
    assert train[16] == 0 and train[3] == 0 and train[20] == 0
    test = eval_label_map(task, 2, fill=255)
    assert all(test[c] == c for c in range(18)) and test[18] == 255 and test[20] == 255
    assert eval_label_map(task, 2)[19] == 0


def test_incremental_datasets_yield_masked_labels(voc):
    task = IncrementalTask.from_name("15-5")
    train, test = incremental_datasets(voc["train"], voc["val"], task, 1, "disjoint", test_fill=255, memory=[0, 1],
                                       cache_dir=voc["cache"])  # fmt: skip
    assert len(train) == len(select_train(LabelIndex.build(voc["train"], voc["cache"]).presence, task, 1)) + 2
    values = set()
    for i in range(len(train)):
        values |= set(train[i][1].unique().tolist())
    assert values <= {0, 255, *task.new_classes(1)} and values & set(task.new_classes(1))
    test_values = set()
    for i in range(len(test)):
        test_values |= set(test[i][1].unique().tolist())
    assert test_values <= set(range(21)) | {255}


def test_class_balanced_memory():
    single = [{1 + i % 5} for i in range(200)]
    chosen = class_balanced_memory(single, [1, 2, 3, 4, 5], size=20, seed=1)
    assert len(set(chosen)) == 20
    assert sorted(sum(1 for i in chosen if c in single[i]) for c in range(1, 6)) == [4] * 5
    assert chosen == class_balanced_memory(single, [1, 2, 3, 4, 5], size=20, seed=1)
    assert chosen != class_balanced_memory(single, [1, 2, 3, 4, 5], size=20, seed=2)
    rare = [{2}] * 50 + [{1, 2}] * 2
    assert {50, 51} <= set(class_balanced_memory(rare, [1, 2], size=10))
    assert sorted(class_balanced_memory([{1}] * 3 + [{3}], [1, 2], size=10)) == [0, 1, 2]


def test_ade_like_variant_scales_the_task_names(tmp_path):
    root = write_synthetic_ade(tmp_path, num_train=40, num_val=10, size=32, seed=0)
    index = LabelIndex.build(ade_samples(root, "train"), tmp_path / "cache")
    record = json.loads((root / "synthetic.json").read_text())["labels"]["training"]
    assert [np.flatnonzero(r).tolist() for r in index.presence] == list(record.values())
    assert not index.presence[:, 255].any()
    stuff_share = index.presence[:, 1:11].sum(axis=1)
    assert (stuff_share == 2).all()
    task = IncrementalTask.from_name("20-5", 30)
    assert task.num_steps == 3 and sum(len(select_train(index.presence, task, s)) for s in range(3)) > 0


DKD_VOC_COUNTS = {
    ("overlap", "15-5"): [9568, 2145],
    ("disjoint", "15-5"): [8437, 2145],
    ("overlap", "19-1"): [10410, 548],
    ("disjoint", "19-1"): [10034, 548],
    ("overlap", "15-1"): [9568, 487, 299, 491, 500, 548],
    ("disjoint", "15-1"): [8437, 378, 299, 420, 500, 548],
    ("overlap", "10-1"): [6139, 528, 1177, 444, 482, 3898, 487, 299, 491, 500, 548],
    ("overlap", "5-3"): [2836, 2331, 1542, 2095, 4484, 1468],
}
DKD_VOC_TEST_15_1 = [1240, 1277, 1329, 1353, 1421, 1449]
DKD_ADE_COUNTS = {
    "100-50": [20210, 9390],
    "100-10": [20192, 1710, 2294, 2747, 4279, 2844],
    "50-50": [20177, 13186, 9390],
}


def _data_root(variable: str):
    root = os.environ.get(variable)
    if not root:
        pytest.skip(f"{variable} is not set: point it at the real dataset to check DKD's per-step counts")
    return root


def test_real_voc_counts_match_dkd_split_files(tmp_path):
    root = _data_root("CVLAB_VOC_ROOT")
    train = LabelIndex.build(voc_samples(root, "train_aug")).presence
    for (setting, name), counts in DKD_VOC_COUNTS.items():
        task = IncrementalTask.from_name(name)
        assert [len(select_train(train, task, s, setting)) for s in range(task.num_steps)] == counts, (setting, name)
    val = LabelIndex.build(voc_samples(root, "val")).presence
    task = IncrementalTask.from_name("15-1")
    assert [len(select_eval(val, task, s)) for s in range(task.num_steps)] == DKD_VOC_TEST_15_1


def test_real_ade_counts_match_dkd_split_files():
    root = _data_root("CVLAB_ADE_ROOT")
    train = LabelIndex.build(ade_samples(root, "training")).presence
    for name, counts in DKD_ADE_COUNTS.items():
        task = IncrementalTask.from_name(name, "ade")
        assert [len(select_train(train, task, s)) for s in range(task.num_steps)] == counts, name
    val = LabelIndex.build(ade_samples(root, "validation")).presence
    task = IncrementalTask.from_name("50-50", "ade")
    assert [len(select_eval(val, task, s)) for s in range(task.num_steps)] == [1997, 2000, 2000]
