"""Video readers on the synthetic writer's MARS, DukeMTMC-VideoReID and LS-VID layouts, the frame-sampling
protocols and the errors on bad input."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat

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


@pytest.fixture(scope="module")
def lsvid(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsvid")
    return root, write_synthetic_video(root, layout="lsvid", seed=4, **SMALL)


def _records(split):
    return [(t.pid, t.camid, len(t.paths)) for t in split.train], [(t.pid, t.camid, len(t.paths)) for t in split.test]


def test_lsvid_list_layout(tmp_path, lsvid):
    """The LS-VID release: '<prefix> <pid>' lists, frames `{trackid}_{frame}_{camid}_{n}.jpg`, `info_test.mat` as
    MATLAB v7.3 (HDF5) or v5, the re-arranged `LSVID/info/...` copy, queries outside the gallery."""
    src = tmp_path / "v73"
    shutil.copytree(lsvid[0], src)
    meta = lsvid[1]
    mat = src / "LS-VID/test/data/info_test.mat"
    with pytest.raises(NotImplementedError):  # a real v7.3 file: scipy refuses it, the reader goes through h5py
        loadmat(str(mat))
    split = read_video_dataset("LS-VID", src)
    assert [tuple(t[1:]) for t in meta["train_tracks"]] == _records(split)[0]
    assert [tuple(t[1:]) for t in meta["test_tracks"]] == _records(split)[1]  # cameras 0-based from the names
    queries = [i for i, t in enumerate(meta["test_tracks"]) if t[0] == "query"]
    assert split.query_idx == queries and split.gallery_idx == [i for i in range(len(split.test)) if i not in queries]
    assert {t.camid for t in split.test} == set(range(4)) and min(len(t.paths) for t in split.test) >= 1
    for t in split.train + split.test:
        names = [p.split("/")[-1].split("_") for p in t.paths]
        assert len({n[0] for n in names}) == 1 and {int(n[2]) for n in names} == {t.camid + 1}
        assert [int(n[1]) for n in names] == sorted(int(n[1]) for n in names)
    # frame numbers without zero padding: the order is by number (9 before 10), not by name
    track = max(split.test, key=lambda t: len(t.paths))
    renamed = []
    for k, path in enumerate(track.paths):
        trackid, _, cam, n = Path(path).name.split("_")
        renamed.append(Path(path).with_name(f"{trackid}_{8 + k}_{cam}_{n}"))
        Path(path).rename(renamed[-1])
    again = read_lsvid(src)
    assert again.test[split.test.index(track)].paths == tuple(str(p) for p in renamed)
    # the same query rows in a MATLAB v5 file (scipy) and in the re-arranged copy
    rows = np.array([[i + 1.0 for i in queries]])
    mat.unlink()
    savemat(str(mat), {"query": rows})
    assert read_lsvid(src).query_idx == queries
    moved = tmp_path / "moved" / "LSVID"
    shutil.copytree(src / "LS-VID", moved)
    (moved / "info").mkdir()
    shutil.move(moved / "list_sequence", moved / "info" / "list_sequence")
    shutil.move(moved / "test" / "data", moved / "info" / "data")
    rearranged = read_lsvid(moved.parent)
    assert _records(rearranged) == _records(again) and rearranged.query_idx == queries
    # a query whose identity has no gallery tracklet is left out, as the skip rule would
    line = (src / "LS-VID/list_sequence/list_seq_test.txt").read_text().splitlines()[queries[0]]
    lone = line.split()[0]
    (src / "LS-VID/list_sequence/list_seq_test.txt").write_text(
        (src / "LS-VID/list_sequence/list_seq_test.txt").read_text() + f"{lone} 9999\n"
    )
    savemat(str(mat), {"query": np.append(rows, len(split.test) + 1.0)[None]})
    lonely = read_lsvid(src)
    assert lonely.test[-1].pid == 9999 and lonely.query_idx == queries
    assert len(split.test) not in lonely.gallery_idx and len(lonely.gallery_idx) == len(split.gallery_idx)


def test_bad_lsvid_inputs_name_the_file_and_layout(tmp_path, lsvid):
    with pytest.raises(FileNotFoundError, match="no LS-VID dataset found.*expected layout: LS-VID/list_sequence"):
        read_lsvid(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(lsvid[0], bad)
    base = bad / "LS-VID"
    mat, test_list = base / "test/data/info_test.mat", base / "list_sequence/list_seq_test.txt"
    good_mat, good_list = mat.read_bytes(), test_list.read_text()
    mat.unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \[.*info_test.mat'\]; expected layout"):
        read_lsvid(bad)
    mat.write_bytes(b"not a MAT-file")
    with pytest.raises(ValueError, match="cannot read .*info_test.mat as a MATLAB file"):
        read_lsvid(bad)
    savemat(str(mat), {"queries": np.array([[1.0]])})
    with pytest.raises(ValueError, match="has no variable 'query'"):
        read_lsvid(bad)
    savemat(str(mat), {"query": np.array([[1.0, 10_000.0]])})
    with pytest.raises(ValueError, match="query rows \\[10000\\] are outside"):
        read_lsvid(bad)
    mat.write_bytes(good_mat)
    test_list.write_text(good_list + "tracklet_test/0001/99999_ 1\n")
    with pytest.raises(ValueError, match="list_seq_test.txt:.*no frame starts with .*99999_.*expected layout"):
        read_lsvid(bad)
    test_list.write_text(good_list + "tracklet_test/0001/99999_\n")
    with pytest.raises(ValueError, match="expected '<path prefix> <pid>'"):
        read_lsvid(bad)
    test_list.write_text(good_list)
    frame = Path(read_lsvid(bad).test[0].paths[0])
    frame.rename(frame.with_name(frame.name.split("_")[0] + "_x.jpg"))  # two fields instead of four
    with pytest.raises(ValueError, match="cannot parse frame and camera"):
        read_lsvid(bad)


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
