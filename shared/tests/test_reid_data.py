"""Re-ID readers, sampler and transforms, run on the synthetic writer's exact on-disk layouts."""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvlab_shared.data.reid import ImageDataset, PKSampler, ReidRecord, read_reid_dataset, reid_transforms, relabel
from cvlab_shared.data.synthetic_reid import write_synthetic_reid

LAYOUTS = [("market", "market1501", 4), ("duke", "dukemtmc", 8), ("msmt17", "msmt17", 6), ("personx", "personx", 6)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = {}
    for layout, _, cams in LAYOUTS:
        root = tmp_path_factory.mktemp(layout)
        out[layout] = (root, write_synthetic_reid(root, layout=layout, num_cams=cams, seed=1))
    return out


@pytest.mark.parametrize("layout,name,cams", LAYOUTS)
def test_readers_parse_the_written_layouts(written, layout, name, cams):
    root, meta = written[layout]
    split = read_reid_dataset(name, root)
    assert {r.pid for r in split.train} == set(meta["train_pids"]) or layout == "msmt17"
    assert len({r.pid for r in split.train}) == len(meta["train_pids"])
    assert all(0 <= r.camid < cams for part in (split.train, split.query, split.gallery) for r in part)
    assert len(split.train) == meta["num_images"]["train"]
    assert len(split.query) == meta["num_images"]["query"]
    # every query identity has a cross-camera match in the gallery
    for q in split.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in split.gallery)
    assert not {r.pid for r in split.train} & {r.pid for r in split.query} or layout == "msmt17"


def test_market_junk_dropped_distractors_kept(written):
    root, meta = written["market"]
    folder = Path(meta["dataset_dir"]) / "bounding_box_test"
    assert len(list(folder.glob("-1_*.jpg"))) == 4 and len(list(folder.glob("0000_*.jpg"))) == 6
    split = read_reid_dataset("market1501", root)
    pids = Counter(r.pid for r in split.gallery)
    assert -1 not in pids and pids[0] == 6
    assert len(split.gallery) == meta["num_images"]["gallery"] - 4


def test_personx_cameras_are_remapped(written):
    root, _ = written["personx"]
    names = [Path(r.path).name for r in read_reid_dataset("personx", root).train]
    assert {n.split("_")[1][1:].split("s")[0] for n in names} <= {"3", "4", "8", "10", "11", "12"}
    assert {r.camid for r in read_reid_dataset("personx", root).train} <= set(range(6))


def test_msmt_v2_and_reader_root_forms(tmp_path, written):
    meta = write_synthetic_reid(tmp_path, layout="msmt17", msmt_version=2, seed=2)
    assert (tmp_path / "MSMT17_V2" / "mask_train_v2").is_dir()
    a = read_reid_dataset("msmt17", tmp_path)
    b = read_reid_dataset("msmt17", meta["dataset_dir"])
    assert a == b and len(a.train) == meta["num_images"]["train"]
    lines = (tmp_path / "MSMT17_V2" / "list_val.txt").read_text().split()
    assert lines, "the train split must also come from list_val.txt"


def test_missing_dataset_names_layout_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"bounding_box_train.*" + str(tmp_path)):
        read_reid_dataset("market1501", tmp_path)
    with pytest.raises(FileNotFoundError, match="list_train.txt"):
        read_reid_dataset("msmt17", tmp_path)
    with pytest.raises(ValueError, match="unknown re-ID dataset"):
        read_reid_dataset("cuhk99", tmp_path)


def test_writer_is_deterministic(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for p in sorted(Path(root).rglob("*.jpg")):
            h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()

    a = write_synthetic_reid(tmp_path / "a", num_train_ids=4, num_test_ids=3, seed=5)
    b = write_synthetic_reid(tmp_path / "b", num_train_ids=4, num_test_ids=3, seed=5)
    write_synthetic_reid(tmp_path / "c", num_train_ids=4, num_test_ids=3, seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert a["camera_shift_order"] == b["camera_shift_order"]


def _pixel_stats(records):
    return np.stack([np.asarray(Image.open(r.path).resize((4, 8)), np.float64).ravel() / 255 for r in records])


def test_camera_shift_order_is_recovered_by_mmd(tmp_path):
    source = write_synthetic_reid(tmp_path / "src", layout="personx", num_cams=6, camera_shift=0.0, seed=100)
    src = _pixel_stats(read_reid_dataset("personx", source["dataset_dir"]).train).mean(0)
    for seed in (0, 1):
        meta = write_synthetic_reid(tmp_path / f"t{seed}", layout="market", num_cams=6, camera_shift=1.0, seed=seed)
        train = read_reid_dataset("market1501", meta["dataset_dir"]).train
        # linear-kernel MMD^2 = squared distance between the mean embeddings
        mmd = [((_pixel_stats([r for r in train if r.camid == c]).mean(0) - src) ** 2).sum() for c in range(6)]
        assert np.argsort(mmd).tolist() == meta["camera_shift_order"]
        assert sorted(meta["camera_shift_levels"]) == pytest.approx([(i + 1) / 6 for i in range(6)])


def test_camera_bias_makes_same_camera_images_closer(tmp_path):
    def gap(bias):
        meta = write_synthetic_reid(tmp_path / f"b{bias}", num_cams=4, camera_shift=0.0, camera_bias=bias, seed=3)
        train = read_reid_dataset("market1501", meta["dataset_dir"]).train
        x = torch.tensor(_pixel_stats(train))
        d = torch.cdist(x, x)
        cams = torch.tensor([r.camid for r in train])
        pids = torch.tensor([r.pid for r in train])
        other_id = pids[:, None] != pids[None]
        same_cam = (cams[:, None] == cams[None]) & other_id
        cross_cam = (cams[:, None] != cams[None]) & other_id
        return (d[cross_cam].mean() - d[same_cam].mean()).item()

    assert gap(1.0) > gap(0.0) + 0.5


def test_relabel_and_dataset(written):
    root, meta = written["market"]
    split = read_reid_dataset("market1501", root)
    train, mapping = relabel(split.train)
    assert sorted({r.pid for r in train}) == list(range(len(meta["train_pids"])))
    assert sorted(mapping) == meta["train_pids"]
    ds = ImageDataset(train, reid_transforms(train=True, size=(64, 32)))
    image, pid, camid, index = ds[5]
    assert image.shape == (3, 64, 32) and (pid, camid, index) == (train[5].pid, train[5].camid, 5)
    test_image = ImageDataset(train, reid_transforms(train=False, size=(128, 64)))[0][0]
    assert test_image.shape == (3, 128, 64)


def test_train_transform_augments_and_test_transform_is_fixed(written):
    _, meta = written["market"]
    image = Image.open(next((Path(meta["dataset_dir"]) / "query").glob("*.jpg")))
    torch.manual_seed(0)
    train_tf, test_tf = reid_transforms(True, size=(64, 32)), reid_transforms(False, size=(64, 32))
    outs = [train_tf(image) for _ in range(8)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert torch.equal(test_tf(image), test_tf(image))


def test_pk_sampler_batches():
    pids = [0] * 10 + [1] * 3 + [2] * 8 + [3] * 5 + [4] * 1 + [-1] * 4
    sampler = PKSampler(pids, p=3, k=4, seed=0)
    idx = list(sampler)
    assert len(idx) == len(sampler) and len(idx) % 12 == 0 and len(idx) > 0
    for b in range(0, len(idx), 12):
        batch = [pids[i] for i in idx[b : b + 12]]
        counts = Counter(batch)
        assert len(counts) == 3 and set(counts.values()) == {4} and -1 not in counts
    assert list(PKSampler(pids, 3, 4, seed=0)) == idx
    sampler.set_epoch(1)
    assert list(sampler) != idx
    ranks = [list(PKSampler(pids * 4, 2, 2, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0 and not set(ranks[0]) & set(ranks[1])
    with pytest.raises(ValueError, match="at least p"):
        PKSampler([0, 0, 1], p=3, k=2)


def test_record_is_hashable():
    assert len({ReidRecord("a", 1, 0), ReidRecord("a", 1, 0)}) == 1
