"""Video readers on the synthetic writer's MARS and DukeMTMC-VideoReID layouts, the frame-sampling protocols and
the errors on bad input."""

import random
import shutil

import numpy as np
import pytest
import torch
from scipy.io import savemat

from cvlab_shared.data.synthetic_video import write_synthetic_video
from cvlab_shared.data.video import (
    VideoDataset,
    all_frame_clips,
    collate_clips,
    read_dukev,
    read_lsvid,
    read_mars,
    read_video_dataset,
    relabel_tracklets,
    rrs_indices,
)

SMALL = dict(num_train_ids=4, num_test_ids=4, max_frames=7, image_size=(16, 8), num_distractors=2, num_junk=1)


@pytest.fixture(scope="module")
def mars(tmp_path_factory):
    root = tmp_path_factory.mktemp("mars")
    return root, write_synthetic_video(root, layout="mars", seed=3, **SMALL)


def test_mars_reader_follows_the_official_split_files(mars):
    root, meta = mars
    split = read_mars(root)
    assert len(split.train) == meta["num_tracklets"]["train"] == len(meta["train_flags"])
    assert len(split.test) == meta["num_tracklets"]["query"] + meta["num_tracklets"]["gallery"]
    assert split.gallery_idx == list(range(len(split.test)))  # queries stay in the MARS gallery
    assert len(split.query_idx) == meta["num_tracklets"]["query"]
    assert {t.pid for t in split.test} >= {0, -1} and {t.pid for t in split.query} <= set(meta["test_pids"])
    for t, flags in zip(split.test, meta["test_flags"]):
        assert len(t.paths) == len(flags["bar"])
        names = [p.split("/")[-1] for p in t.paths]
        assert all(n[:4] == ("00-1" if t.pid == -1 else f"{t.pid:04d}") and int(n[5]) == t.camid + 1 for n in names)
        assert [int(n.split("F")[1][:3]) for n in names] == list(range(1, len(names) + 1))
    relabelled, mapping = relabel_tracklets(split.train)
    assert sorted({t.pid for t in relabelled}) == list(range(len(mapping)))


def test_writer_is_deterministic_and_plants_the_distractors(tmp_path):
    a = write_synthetic_video(tmp_path / "a", seed=5, **SMALL)
    b = write_synthetic_video(tmp_path / "b", seed=5, **SMALL)
    assert a["train_flags"] == b["train_flags"]
    fa, fb = read_mars(tmp_path / "a").train[0].paths[0], read_mars(tmp_path / "b").train[0].paths[0]
    assert open(fa, "rb").read() == open(fb, "rb").read()
    big = write_synthetic_video(tmp_path / "c", seed=1, num_train_ids=12, num_test_ids=2, max_frames=20,
                                image_size=(16, 8))
    flags = big["train_flags"]
    lengths = [len(f["bar"]) for f in flags]
    assert min(lengths) >= 1 and max(lengths) <= 20
    assert 0.5 < np.mean([b for f in flags for b in f["bar"]]) < 0.9
    occluded = [f["occluded"] for f in flags if any(f["occluded"])]
    assert occluded and all(o[0] and not o[-1] or len(o) == 1 for o in occluded)  # the first frames are hidden
    assert any(any(f["blurred"]) for f in flags)


def test_dukev_reader_and_layout_names(tmp_path):
    meta = write_synthetic_video(tmp_path, layout="dukev", seed=2, **SMALL)
    split = read_video_dataset("DukeMTMC-VideoReID", tmp_path)
    assert len(split.query) == meta["num_tracklets"]["query"] and len(split.gallery) == meta["num_tracklets"]["gallery"]
    assert not set(split.query_idx) & set(split.gallery_idx)
    for t, flags in zip(split.test, meta["test_flags"]):
        assert len(t.paths) == len(flags["bar"])
        assert f"_C{t.camid + 1}_" in t.paths[0]


def test_lsvid_list_layout(tmp_path, mars):
    src = read_mars(mars[0])
    base = tmp_path / "LS-VID"
    lines = {"train": [], "test": []}
    for part, tracks in (("train", src.train), ("test", src.test)):
        for i, t in enumerate(tracks):
            folder = base / f"tracklet_{part}" / f"{i:04d}"
            folder.mkdir(parents=True)
            for p in t.paths:
                shutil.copy(p, folder)
            lines[part].append(f"tracklet_{part}/{i:04d} {t.pid} {t.camid}")
    (base / "list_sequence").mkdir()
    for part in ("train", "test"):
        (base / "list_sequence" / f"list_seq_{part}.txt").write_text("\n".join(lines[part]))
    (base / "list_sequence" / "query_idx.txt").write_text(" ".join(map(str, src.query_idx)))
    (base / "list_sequence" / "gallery_idx.txt").write_text(" ".join(map(str, src.gallery_idx)))
    split = read_lsvid(tmp_path)
    assert [(t.pid, t.camid, len(t.paths)) for t in split.test] == [(t.pid, t.camid, len(t.paths)) for t in src.test]
    assert split.query_idx == src.query_idx


def test_restricted_random_sampling_and_all_frames_protocol():
    assert rrs_indices(1, 6) == [0] * 6 and all_frame_clips(1, 6) == [[0] * 6]  # official padding never ends here
    assert rrs_indices(13, 6) == [0, 3, 6, 9, 12, 12]  # chunks of 3, the last frame repeated
    rng = random.Random(0)
    for _ in range(20):
        idx = rrs_indices(13, 6, rng)
        assert all(min(3 * c, 12) <= i <= min(3 * c + 2, 12) for c, i in enumerate(idx))
    assert all_frame_clips(12, 6) == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]]
    clips = all_frame_clips(7, 3)
    assert len(clips) == 3 and sorted(set(sum(clips, []))) == list(range(7))


def test_dataset_protocols_give_the_expected_shapes(mars):
    split = read_mars(mars[0])
    one = [t for t in split.train if len(t.paths) == 1] or [type(split.train[0])(split.train[0].paths[:1], 1, 0)]
    for tracks in (split.train[:3], one):
        train = VideoDataset(tracks, 4, "rrs_train", erasing_p=0.5)
        assert train[0][0].shape == (4, 3, 256, 128)
    from cvlab_shared.data.video import video_transforms

    test = VideoDataset(split.test[:3], 4, "all", transform=video_transforms((16, 8)))
    batch = collate_clips([test[i] for i in range(3)])
    counts = [2 * len(all_frame_clips(len(t.paths), 4)) for t in split.test[:3]]
    assert batch[0].shape == (sum(counts), 4, 3, 16, 8) and batch[4].tolist() == counts
    x = test[0][0]
    torch.testing.assert_close(x[1], x[0].flip(-1))  # every clip is followed by its flip


def test_bad_mars_roots_name_the_expected_layout(mars, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected layout: MARS"):
        read_mars(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(mars[0] / "MARS", broken / "MARS")
    (broken / "MARS" / "info" / "query_IDX.mat").unlink()
    with pytest.raises(FileNotFoundError, match="query_IDX.mat"):
        read_mars(broken)
    shutil.rmtree(broken / "MARS" / "info")
    with pytest.raises(FileNotFoundError, match="info"):
        read_mars(broken)


def test_empty_tracklets_and_missing_query_ids_are_errors(mars, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(mars[0] / "MARS", bad / "MARS")
    savemat(str(bad / "MARS/info/tracks_train_info.mat"), {"track_train_info": np.array([[3.0, 2.0, 1.0, 1.0]])})
    with pytest.raises(ValueError, match="empty or out-of-range tracklet"):
        read_mars(bad)
    duke = tmp_path / "duke"
    write_synthetic_video(duke, layout="dukev", seed=2, **SMALL)
    base = duke / "DukeMTMC-VideoReID"
    pid_dir = next((base / "query").iterdir())
    shutil.rmtree(base / "gallery" / pid_dir.name)
    with pytest.raises(ValueError, match="no gallery tracklet"):
        read_dukev(duke)
    track = next((base / "query").iterdir())
    shutil.rmtree(base / "gallery")
    (base / "gallery" / track.name / "0001").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty tracklet"):
        read_dukev(duke)
