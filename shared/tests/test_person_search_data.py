"""Synthetic person-search scenes written in the CUHK-SYSU and PRW layouts and read back by the real readers."""

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from cvlab_shared.data.person_search import SceneDataset, read_cuhk_sysu, read_prw
from cvlab_shared.data.synthetic_person_search import (
    UNLABELED,
    SyntheticSceneDataset,
    render_scene,
    scene_plan,
    write_cuhk_sysu,
    write_prw,
)
from cvlab_shared.metrics.person_search import evaluate_detection, evaluate_search

SMALL = dict(num_train_ids=8, num_test_ids=5, num_train_images=12, num_test_images=8, num_background_people=12)


@pytest.fixture(scope="module")
def plan():
    return scene_plan(seed=3, **SMALL)


@pytest.fixture(scope="module")
def cuhk(plan, tmp_path_factory):
    return write_cuhk_sysu(tmp_path_factory.mktemp("cuhk"), plan, gallery_sizes=(3, 5))


@pytest.fixture(scope="module")
def prw(plan, tmp_path_factory):
    return write_prw(tmp_path_factory.mktemp("prw"), plan)


def test_plan_properties():
    plan = scene_plan(seed=0)  # the default size of the research design
    boxes = [p for s in plan.scenes for p in s.persons]
    heights = np.array([p.box[3] - p.box[1] for p in boxes])
    assert heights.min() >= 18 and heights.max() <= 110 and (heights <= 24).any()
    unl = np.mean([p.pid == UNLABELED for p in boxes])
    assert 0.2 < unl < 0.45
    train_counts = np.bincount([p.pid for s in plan.split("train") for p in s.persons if p.pid != UNLABELED])[1:]
    assert train_counts.min() >= 2 and train_counts.max() >= 3 * np.median(train_counts)  # a long tail
    for s in plan.scenes:
        assert 2 <= len(s.persons) <= 6
        for p in s.persons:
            assert 0 <= p.box[0] < p.box[2] <= plan.width and 0 <= p.box[1] < p.box[3] <= plan.height
    test_pids = {p.pid for s in plan.split("test") for p in s.persons} - {UNLABELED}
    assert not test_pids & set(train_counts.nonzero()[0] + 1)
    for pid in test_pids:
        cams = {s.cam for s in plan.split("test") for p in s.persons if p.pid == pid}
        assert len(cams) >= 2
    assert len(plan.queries) == plan.num_test_ids
    bg = [p.key for s in plan.scenes for p in s.persons if p.pid == UNLABELED]
    assert len(set(bg)) < len(bg)  # recurring background people


def test_rendering_is_deterministic(plan):
    a, b = render_scene(plan, 0), render_scene(scene_plan(seed=3, **SMALL), 0)
    assert a.shape == (192, 288, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render_scene(plan, 1))


def _gt(plan, split):
    return {i: s for i, s in enumerate(plan.split(split))}


def test_cuhk_layout_round_trip(plan, cuhk):
    data = read_cuhk_sysu(cuhk.parent)
    assert len(data.train) == len(plan.split("train")) and len(data.gallery) == len(plan.split("test"))
    assert data.num_train_pids == plan.num_train_ids
    truth = {f"s{s.index + 1}.jpg": s for s in plan.scenes}
    for rec in data.train:
        s = truth[rec.name]
        np.testing.assert_array_equal(rec.boxes, [p.box for p in s.persons])
        np.testing.assert_array_equal(rec.pids, [p.pid for p in s.persons])
    assert sorted(data.protocols) == [3, 5, 50]
    assert len(data.queries) == plan.num_test_ids
    for qi, (q, (si, k)) in enumerate(zip(data.queries, plan.queries)):
        true = plan.scenes[si].persons[k]
        assert q.name == f"s{si + 1}.jpg" and tuple(q.box) == true.box
        gallery = data.protocols[50][qi]
        assert q.name not in [n for n, _ in gallery]
        positives = [n for n, b in gallery if b is not None]
        want = [
            f"s{s.index + 1}.jpg"
            for s in plan.split("test")
            if s.index != si and any(p.pid == true.pid for p in s.persons)
        ]
        assert sorted(positives) == sorted(want)
        assert len(data.protocols[3][qi]) == max(3, len(want))


def test_prw_layout_round_trip_with_crlf_queries(plan, prw):
    assert b"\r\n" in (prw / "query_info.txt").read_bytes()
    data = read_prw(prw.parent)
    assert [s.cam for s in data.gallery] == [s.cam + 1 for s in plan.split("test")]
    for rec, s in zip(data.gallery, plan.split("test")):
        np.testing.assert_array_equal(rec.boxes, [p.box for p in s.persons])
        np.testing.assert_array_equal(rec.pids, [p.pid for p in s.persons])
    assert [q.pid for q in data.queries] == [plan.scenes[s].persons[k].pid for s, k in plan.queries]
    image, target, _ = SceneDataset(data.gallery)[0]
    assert image.shape == (3, 192, 288) and target["boxes"].shape == (len(data.gallery[0].pids), 4)


def test_in_memory_dataset_renders_the_written_scenes(plan, prw):
    data = read_prw(prw.parent)
    image, target, _ = SyntheticSceneDataset(plan, "test")[2]
    disk, disk_target, _ = SceneDataset(data.gallery)[2]
    assert (image - disk).abs().mean() < 0.02  # jpeg
    np.testing.assert_array_equal(target["labels"].numpy(), disk_target["labels"].numpy())


def test_oracle_and_shuffled_features_on_synthetic_scenes(plan, prw):
    data = read_prw(prw.parent)
    key_of = {}
    for s in plan.scenes:
        for p in s.persons:
            key_of[(f"c{s.cam + 1}s1_{s.index + 1:06d}.jpg", p.box)] = p.key

    def code(name, box):
        c = plan.appearances[key_of[(name, tuple(int(v) for v in box))]].code()
        return c / np.linalg.norm(c)

    dets = [np.c_[s.boxes, np.ones(len(s.boxes))] for s in data.gallery]
    feats = [np.stack([code(s.name, b) for b in s.boxes]) for s in data.gallery]
    qfeats = np.stack([code(q.name, q.box) for q in data.queries])
    oracle = evaluate_search(data.gallery, dets, feats, data.queries, qfeats).metrics()
    assert oracle["mAP"] == 1.0 and oracle["top1"] == 1.0
    assert evaluate_detection(data.gallery, dets) == {"recall": 1.0, "ap": 1.0}
    chance = []
    for seed in range(20):
        r = np.random.default_rng(seed)
        shuffled = [r.standard_normal(f.shape) for f in feats]
        chance.append(
            evaluate_search(data.gallery, dets, shuffled, data.queries, r.standard_normal(qfeats.shape)).metrics()[
                "mAP"
            ]
        )
    boxes_per_frame = np.mean([len(s.boxes) for s in data.gallery])
    assert np.mean(chance) < 0.5 and np.mean(chance) < oracle["mAP"] / 2, (np.mean(chance), boxes_per_frame)


def test_missing_mat_is_one_clear_error(cuhk, tmp_path):
    import shutil

    broken = tmp_path / "CUHK-SYSU"
    shutil.copytree(cuhk, broken)
    (broken / "annotation" / "pool.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"pool\.mat; expected layout: CUHK-SYSU/"):
        read_cuhk_sysu(tmp_path)


def test_box_outside_its_image_is_one_clear_error(prw, tmp_path):
    import shutil

    broken = tmp_path / "PRW-v16.04.20"
    shutil.copytree(prw, broken)
    name = sorted((broken / "annotations").iterdir())[0]
    rows = loadmat(name)["box_new"]
    rows[0, 1] = 280  # x so far right that x + w leaves the 288-px frame
    savemat(name, {"box_new": rows})
    with pytest.raises(ValueError, match="lies outside the 288x192 image"):
        read_prw(tmp_path)


def test_query_without_gallery_match_is_one_clear_error(prw, tmp_path):
    import shutil

    broken = tmp_path / "PRW-v16.04.20"
    shutil.copytree(prw, broken)
    info = broken / "query_info.txt"
    info.write_bytes(info.read_bytes().replace(b"\r\n", b"\r\n", 1).split(b"\r\n")[0].replace(b" ", b"9 ", 1) + b"\r\n")
    with pytest.raises(ValueError, match="appears in no other test frame"):
        read_prw(tmp_path)
