"""Visible-infrared readers (SYSU-MM01, RegDB) on the synthetic writer's exact layouts, the SYSU gallery sampling
against LbA's (golden `sysu_gallery_sampling_lba`), the identity sampler, and the SYSU/RegDB protocol wrappers
against the golden `sysu_*` / `regdb_lba_eval_regdb` entries."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvlab_shared.data.synthetic_vi_reid import write_synthetic_regdb, write_synthetic_sysu
from cvlab_shared.data.vi_reid import (
    PairedVIDataset,
    VIDatasetError,
    VIIdentitySampler,
    random_sysu_permutations,
    read_regdb,
    read_sysu_mm01,
    read_sysu_permutations,
    sysu_gallery,
    write_sysu_permutations,
)
from cvlab_shared.metrics.vi_reid import evaluate_regdb, evaluate_sysu, evaluate_sysu_distmat, evaluate_sysu_trials
from cvlab_shared.reference import load_golden

ATOL = 1e-6


@pytest.fixture(scope="module")
def golden():
    return load_golden("reid_eval")


@pytest.fixture(scope="module")
def sysu(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    meta = write_synthetic_sysu(root, num_train_ids=6, num_val_ids=2, num_test_ids=5, images_per_cam=2, seed=3)
    return root, meta


@pytest.fixture(scope="module")
def regdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("regdb")
    return root, write_synthetic_regdb(root, num_ids=8, images_per_id=2, seed=1)


def test_sysu_reader_parses_the_written_layout(sysu):
    root, meta = sysu
    data = read_sysu_mm01(root)
    assert data.root == Path(meta["dataset_dir"])
    assert {r.pid for r in data.train_visible} == set(meta["train_ids"] + meta["val_ids"])
    assert {r.pid for r in data.train_thermal} == set(meta["train_ids"] + meta["val_ids"])
    assert {r.camid for r in data.train_visible} <= {0, 1, 3, 4} and {r.camid for r in data.train_thermal} <= {2, 5}
    query = data.query("all")
    assert {r.pid for r in query} == set(meta["test_ids"]) and {r.camid for r in query} <= {2, 5}
    n_test_ir = sum(len(list((root / "SYSU-MM01" / f"cam{c}").glob(f"{p:04d}/*.jpg"))) for c in (3, 6) for p in meta["test_ids"])
    assert len(query) == n_test_ir
    # infrared images are single-channel; read as RGB with equal channels
    ir = np.asarray(Image.open(query[0].path))
    assert ir.ndim == 2
    gallery = data.gallery("all", trial=0)
    assert len(gallery) == sum(1 for p in meta["test_ids"] for c in (1, 2, 4, 5) if data.files(c, p))
    indoor = data.gallery("indoor", trial=0)
    assert {r.camid for r in indoor} <= {0, 1} and all(any(r.pid == p for r in indoor) for p in meta["test_ids"])
    multi = data.gallery("all", trial=0, shots=10)
    assert len(multi) == sum(len(data.files(c, p)) for p in meta["test_ids"] for c in (1, 2, 4, 5))


def test_sysu_writer_is_deterministic(tmp_path):
    a = write_synthetic_sysu(tmp_path / "a", num_train_ids=3, num_val_ids=1, num_test_ids=2, images_per_cam=1, seed=5)
    b = write_synthetic_sysu(tmp_path / "b", num_train_ids=3, num_val_ids=1, num_test_ids=2, images_per_cam=1, seed=5)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.jpg"))
    assert files_a == files_b and a["test_ids"] == b["test_ids"]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


def test_thermal_keeps_shape_and_drops_colour(sysu):
    root, meta = sysu
    data = read_sysu_mm01(root)
    ir = np.asarray(Image.open(data.train_thermal[0].path).convert("RGB"), dtype=np.float32)
    vis = np.asarray(Image.open(data.train_visible[0].path), dtype=np.float32)
    assert np.abs(ir[..., 0] - ir[..., 1]).max() == 0 and ir.shape == vis.shape
    # the person is brighter than the dark background in the thermal image (centre vs border columns)
    assert ir[:, 10:22].mean() > ir[:, :3].mean() + 20


def test_sysu_gallery_sampling_matches_lba(golden):
    entry = golden["entries"]["sysu_gallery_sampling_lba"]["outputs"]
    tree = {tuple(k.split("/")): n for k, n in entry["tree"].items()}
    files = lambda cam, pid: [f"f{i:03d}" for i in range(tree.get((f"cam{cam}", f"{pid:04d}"), 0))]
    ids = sorted({int(p) for _, p in tree})
    for trial, chosen in entry["chosen_file_index_per_trial"].items():
        got = sysu_gallery(files, ids, "all", int(trial))
        expected = [(int(pid), int(cam[3:]) - 1, f"f{i:03d}") for pid, cam, i in chosen]
        assert [(r.pid, r.camid, r.path) for r in got] == expected


def test_sysu_gallery_official_permutation_option():
    files = lambda cam, pid: [f"{cam}-{pid}-{i}" for i in range(4)]
    perms = {(c, p): [[3, 1, 2, 4], [2, 4, 1, 3]] for c in (1, 2) for p in (7, 9)}
    got = sysu_gallery(files, [9, 7], "indoor", trial=1, shots=2, permutations=perms)
    assert [r.path for r in got] == ["1-7-1", "1-7-3", "2-7-1", "2-7-3", "1-9-1", "1-9-3", "2-9-1", "2-9-3"]


def test_rand_perm_cam_round_trip_in_the_official_cell_layout(tmp_path):
    from scipy.io import loadmat

    perms = {(1, 7): [[3, 1, 2], [2, 3, 1]], (3, 533): [[1], [1]], (5, 2): [[2, 1], [1, 2]]}
    path = write_sysu_permutations(tmp_path / "exp" / "rand_perm_cam.mat", perms)
    assert read_sysu_permutations(path) == perms
    # the MATLAB layout as the official get_testing_set.m indexes it: rand_perm_cam{cam}{id}(trial, :)
    cell = loadmat(str(path))["rand_perm_cam"]
    assert cell.shape == (6, 1) and cell[0, 0].shape == (533, 1)
    assert cell[0, 0][6, 0].tolist() == [[3.0, 1.0, 2.0], [2.0, 3.0, 1.0]] and cell[2, 0][532, 0].shape == (2, 1)
    assert cell[1, 0][0, 0].size == 0  # an id without images in a camera: empty
    rand = random_sysu_permutations({(1, 4): 5, (2, 4): 0, (4, 9): 1}, trials=3, seed=2)
    assert set(rand) == {(1, 4), (4, 9)} and all(sorted(r) == [1, 2, 3, 4, 5] for r in rand[(1, 4)])
    assert read_sysu_permutations(write_sysu_permutations(tmp_path / "r.mat", rand)) == rand


def test_synthetic_sysu_writes_rand_perm_cam_and_the_gallery_follows_it(sysu, tmp_path):
    root, meta = sysu
    data = read_sysu_mm01(root)
    perms = data.read_permutations(trials=10)  # the writer's file: every (cam, id) with images, 10 permutations
    for pid in meta["test_ids"]:
        for cam in (1, 2, 4, 5):
            n = len(data.files(cam, pid))
            assert (n == 0) == ((cam, pid) not in perms)
            assert n == 0 or all(sorted(row) == list(range(1, n + 1)) for row in perms[(cam, pid)])
    # hand-made file: every (cam, id) reversed in trial 0, identity order in trial 1 (2 images each here)
    own = {key: [list(range(len(rows[0]), 0, -1)), list(range(1, len(rows[0]) + 1))] for key, rows in perms.items()}
    path = write_sysu_permutations(tmp_path / "own.mat", own)
    mine = data.read_permutations(path, trials=2)
    pid = meta["test_ids"][0]
    cams = [c for c in (1, 2, 4, 5) if data.files(c, pid)]
    folder = data.root
    picked = lambda trial, shots: [r.path for r in data.gallery("all", trial, shots, mine) if r.pid == pid]
    assert picked(0, 1) == [str(folder / f"cam{c}" / f"{pid:04d}" / "0002.jpg") for c in cams]
    assert picked(1, 1) == [str(folder / f"cam{c}" / f"{pid:04d}" / "0001.jpg") for c in cams]
    assert picked(0, 2) == [str(folder / f"cam{c}" / f"{pid:04d}" / f"{i:04d}.jpg") for c in cams for i in (2, 1)]
    with pytest.raises(ValueError, match="trial 2"):
        data.gallery("all", 2, 1, mine)
    with pytest.raises(VIDatasetError, match="own.mat.*needs a permutation for 10 trials"):
        data.read_permutations(path, trials=10)
    bad = dict(own)
    bad[(cams[0], pid)] = [[3, 1], [1, 2]]
    with pytest.raises(VIDatasetError, match=rf"bad.mat: camera {cams[0]} id {pid:04d}: index 3 outside 1..2"):
        data.read_permutations(write_sysu_permutations(tmp_path / "bad.mat", bad))
    with pytest.raises(VIDatasetError, match=r"missing .*nothere.mat: expected a MATLAB v5 .mat file holding"):
        data.read_permutations(tmp_path / "nothere.mat")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(VIDatasetError, match="junk.mat: cannot read it as a MATLAB v5"):
        read_sysu_permutations(tmp_path / "junk.mat")


def test_sysu_errors_name_the_problem(tmp_path, sysu):
    with pytest.raises(VIDatasetError, match=r"exp"):
        read_sysu_mm01(tmp_path)
    root = tmp_path / "broken"
    write_synthetic_sysu(root, num_train_ids=2, num_val_ids=1, num_test_ids=1, images_per_cam=1, seed=0)
    base = root / "SYSU-MM01"
    pid = int((base / "exp" / "train_id.txt").read_text().split(",")[0])
    for cam in (3, 6):
        for f in (base / f"cam{cam}" / f"{pid:04d}").glob("*.jpg"):
            f.unlink()
    with pytest.raises(VIDatasetError, match=f"id {pid:04d} has no infrared image"):
        read_sysu_mm01(root)
    (base / "exp" / "test_id.txt").unlink()
    with pytest.raises(VIDatasetError, match="test_id.txt"):
        read_sysu_mm01(root)


def test_regdb_reader_and_trials(regdb):
    root, meta = regdb
    split = read_regdb(root, trial=3)
    assert len(split.train_visible) == len(split.train_thermal) == 4 * 2
    assert {r.pid for r in split.train_visible} == set(range(4)) == {r.pid for r in split.test_thermal}
    train_paths = {Path(r.path).parent.name for r in split.train_visible}
    test_paths = {Path(r.path).parent.name for r in split.test_visible}
    assert not train_paths & test_paths and all(Path(r.path).is_file() for r in split.test_thermal)
    assert {r.camid for r in split.test_visible} == {0} and {r.camid for r in split.test_thermal} == {1}
    assert read_regdb(root, 1).train_visible != split.train_visible
    for bad in (0, 11):
        with pytest.raises(VIDatasetError, match="trial must be an integer in 1..10"):
            read_regdb(root, bad)
    with pytest.raises(VIDatasetError, match="train_visible_2.txt"):
        read_regdb(root / "nowhere", 2)


def test_identity_sampler_batches_and_shards(sysu):
    data = read_sysu_mm01(sysu[0])
    v, t = [r.pid for r in data.train_visible], [r.pid for r in data.train_thermal]
    sampler = VIIdentitySampler(v, t, num_ids=4, num_pos=2, seed=0)
    pairs = list(sampler)
    assert len(pairs) == len(sampler) == sampler.num_batches * 8
    for b in range(sampler.num_batches):
        batch = pairs[b * 8 : (b + 1) * 8]
        pids = [v[i] for i, _ in batch]
        assert pids == [t[j] for _, j in batch]  # each pair is one identity in both modalities
        assert len(set(pids)) == 4 and all(pids[2 * k] == pids[2 * k + 1] for k in range(4))  # identity-major
    sampler.set_epoch(1)
    assert list(sampler) != pairs
    sampler.set_epoch(0)
    assert list(sampler) == pairs
    shards = [VIIdentitySampler(v, t, 4, 2, seed=0, num_batches=6, num_replicas=2, rank=r) for r in (0, 1)]
    whole = VIIdentitySampler(v, t, 4, 2, seed=0, num_batches=6).batches()
    got = [list(s) for s in shards]
    assert got[0] == [p for b in whole[0::2] for p in b] and got[1] == [p for b in whole[1::2] for p in b]
    dataset = PairedVIDataset(data.train_visible, data.train_thermal)
    xv, xt, yv, yt = dataset[pairs[0]]
    assert xv.mode == xt.mode == "RGB" and yv == yt


@pytest.mark.parametrize("shot", ["single_shot_all", "multi_shot3_all", "single_shot_indoor"])
def test_sysu_protocol_wrapper_matches_golden(golden, shot):
    c = golden["inputs"]["sysu_cross_modality"]
    g = c[shot]
    out = evaluate_sysu_distmat(torch.tensor(g["distmat"]), c["q_pids"], g["g_pids"], c["q_cams"], g["g_cams"], 5)
    for name in (f"sysu_lba_eval_sysu_{shot}", f"sysu_official_matlab_{shot}"):
        expected = golden["entries"][name]["outputs"]
        np.testing.assert_allclose(out["cmc"][:5], expected["cmc"][:5], atol=ATOL)
        assert out["mAP"] == pytest.approx(expected["mAP"], abs=ATOL)
        if "mINP" in expected:
            assert out["mINP"] == pytest.approx(expected["mINP"], abs=ATOL)


def test_regdb_wrapper_matches_golden_via_features(golden):
    """Features whose Euclidean distance equals the golden distance matrix: evaluate_regdb reproduces eval_regdb."""
    case = golden["inputs"]["regdb"]
    d = torch.tensor(case["distmat"], dtype=torch.float64)
    n_q, n_g = d.shape
    q = torch.cat([torch.eye(n_q, dtype=torch.float64), torch.zeros(n_q, n_g, dtype=torch.float64)], 1)
    g = torch.cat([torch.zeros(n_g, n_q, dtype=torch.float64), torch.eye(n_g, dtype=torch.float64)], 1)
    q = torch.cat([q, -d / 2], 1)
    g = torch.cat([g, torch.eye(n_g, dtype=torch.float64)], 1)
    # |q_i - g_j|^2 = 1 + sum_k d_ik^2/4 + 1 + d_ij  -> a per-query constant plus d_ij: same ranking per query
    out = evaluate_regdb(q, g, case["q_pids"], case["g_pids"], metric="euclidean", max_rank=15)
    expected = golden["entries"]["regdb_lba_eval_regdb"]["outputs"]
    assert out["rank1"] == pytest.approx(expected["cmc"][0], abs=ATOL)
    assert out["rank5"] == pytest.approx(expected["cmc"][4], abs=ATOL)
    assert out["rank10"] == pytest.approx(expected["cmc"][9], abs=ATOL)
    assert out["mAP"] == pytest.approx(expected["mAP"], abs=ATOL)
    assert out["mINP"] == pytest.approx(expected["mINP"], abs=ATOL)


def test_sysu_trials_average_and_oracle_features(sysu):
    """Identity-code features give near-perfect SYSU scores through the real reader, sampler and protocol."""
    root, meta = sysu
    data = read_sysu_mm01(root)
    codes = {int(k): torch.tensor(v) for k, v in meta["identity_codes"].items()}
    gen = torch.Generator().manual_seed(0)
    feats = lambda recs: torch.stack([codes[r.pid] + 0.01 * torch.randn(len(codes[r.pid]), generator=gen) for r in recs])
    query = data.query("all")
    qf = feats(query)

    def gallery(t):
        recs = data.gallery("all", t)
        return feats(recs), [r.pid for r in recs], [r.camid + 1 for r in recs]

    out = evaluate_sysu_trials(qf, [r.pid for r in query], [r.camid + 1 for r in query], gallery, trials=3,
                               metric="euclidean")
    assert len(out["trials"]) == 3 and out["rank1"] == pytest.approx(np.mean([t["rank1"] for t in out["trials"]]))
    assert out["mAP"] > 0.95
    one = evaluate_sysu(qf, *gallery(0)[:1], [r.pid for r in query], gallery(0)[1], [r.camid + 1 for r in query],
                        gallery(0)[2], metric="euclidean")
    assert Counter(r.camid for r in query).keys() <= {2, 5} and one["num_queries"] == len(query)
