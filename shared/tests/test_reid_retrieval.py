"""Retrieval metrics against the golden outputs of torchreid, fast-reid, open-reid, STMN, LbA and the official
MATLAB code (../shared/golden/reid_eval.json), plus an oracle-feature test on the synthetic writer's data."""

import numpy as np
import pytest
import torch

from cvlab_shared.data.reid import read_reid_dataset
from cvlab_shared.data.synthetic_reid import write_synthetic_reid
from cvlab_shared.metrics.retrieval import evaluate_distmat, evaluate_retrieval
from cvlab_shared.reference import load_golden

ATOL = 1e-6


@pytest.fixture(scope="module")
def golden():
    return load_golden("reid_eval")


def _image_case(golden, name, drop_junk):
    case = golden["inputs"][name]
    dist = torch.tensor(case["distmat"], dtype=torch.float64)
    g_pids = np.array(case["g_pids"])
    cols = g_pids != -1 if drop_junk else np.ones(len(g_pids), bool)
    return (
        dist[:, cols],
        case["q_pids"],
        g_pids[cols].tolist(),
        case["q_camids"],
        np.array(case["g_camids"])[cols].tolist(),
    )


def _check(out, expected, n=10):
    np.testing.assert_allclose(
        out["cmc"][:n], expected["cmc_top10"][:n] if "cmc_top10" in expected else expected["cmc"][:n], atol=ATOL
    )
    assert out["mAP"] == pytest.approx(expected["mAP"], abs=ATOL)
    if "mINP" in expected:
        assert out["mINP"] == pytest.approx(expected["mINP"], abs=ATOL)


@pytest.mark.parametrize("block", [None, 3])
def test_market_python_protocol(golden, block):
    e = golden["entries"]
    # junk columns physically removed (as the loaders do) and junk masked by the evaluator give the same numbers
    removed = evaluate_distmat(
        *_image_case(golden, "image_market_style", True), max_rank=10, block=block, per_query=True
    )
    masked = evaluate_distmat(*_image_case(golden, "image_market_style", False), max_rank=10, block=block)
    for key in (
        "market_torchreid_python_junk_removed",
        "market_fastreid_junk_removed",
        "market_openreid_clustercontrast_junk_removed",
        "market_torchreid_cython_junk_removed",
    ):
        _check(removed, e[key]["outputs"])
        _check(masked, e[key]["outputs"])
    fr = e["market_fastreid_junk_removed"]["outputs"]
    np.testing.assert_allclose(removed["ap"], fr["per_query_AP"], atol=ATOL)
    np.testing.assert_allclose(removed["inp"], fr["per_query_INP"], atol=ATOL)
    assert removed["rank1"] == pytest.approx(0.9)


def test_market_junk_kept_as_negatives(golden):
    out = evaluate_distmat(*_image_case(golden, "image_market_style", False), max_rank=10, junk_pids=())
    _check(out, golden["entries"]["market_torchreid_python_junk_kept"]["outputs"])


def test_market_official_matlab(golden):
    out = evaluate_distmat(
        *_image_case(golden, "image_market_style", False), max_rank=10, ap="trapezoid", no_match="zero"
    )
    _check(out, golden["entries"]["market_official_matlab"]["outputs"])


def test_invalid_query_skip_or_zero(golden):
    e = golden["entries"]
    skip = evaluate_distmat(*_image_case(golden, "image_edge_invalid_query", True), max_rank=10)
    _check(skip, e["market_edge_torchreid"]["outputs"])
    assert (skip["num_queries"], skip["num_valid_queries"]) == (11, 10)
    zero = evaluate_distmat(
        *_image_case(golden, "image_edge_invalid_query", False), max_rank=10, ap="trapezoid", no_match="zero"
    )
    _check(zero, e["market_edge_official_matlab"]["outputs"])


def test_video_protocol_stmn_and_mars(golden):
    case = golden["inputs"]["video_tracklet_features"]
    feats = torch.tensor(case["features"], dtype=torch.float32)
    ids, cams, qidx = np.array(case["ids"]), np.array(case["cams"]), np.array(case["query_idx"])
    gal = ids != -1
    args = (feats[qidx], feats[gal], ids[qidx], ids[gal], cams[qidx], cams[gal])
    _check(
        evaluate_retrieval(*args, metric="cosine", max_rank=10), golden["entries"]["video_stmn_Video_Cmc"]["outputs"]
    )
    _check(
        evaluate_retrieval(*args, metric="cosine", max_rank=10), golden["entries"]["video_torchreid_eval"]["outputs"]
    )
    # official MARS: whole test set as gallery, junk (-1) treated as junk, trapezoidal AP
    mars = evaluate_retrieval(
        feats[qidx], feats, ids[qidx], ids, cams[qidx], cams, metric="cosine", max_rank=10, ap="trapezoid"
    )
    _check(mars, golden["entries"]["video_mars_official_matlab"]["outputs"])


def test_regdb_without_camera_rule(golden):
    case = golden["inputs"]["regdb"]
    n_q, n_g = len(case["q_pids"]), len(case["g_pids"])
    out = evaluate_distmat(
        torch.tensor(case["distmat"]),
        case["q_pids"],
        case["g_pids"],
        [1] * n_q,
        [2] * n_g,
        max_rank=20,
        same_camera_rule=False,
    )
    _check(out, golden["entries"]["regdb_lba_eval_regdb"]["outputs"], n=15)


def test_features_path_equals_distmat_path_and_metrics():
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(37, 8, generator=g), torch.randn(120, 8, generator=g)
    qp, gp = torch.randint(0, 10, (37,), generator=g), torch.randint(0, 10, (120,), generator=g)
    qc, gc = torch.randint(0, 3, (37,), generator=g), torch.randint(0, 3, (120,), generator=g)
    for metric in ("cosine", "euclidean"):
        if metric == "cosine":
            d = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(gal, dim=1).T
        else:
            d = torch.cdist(q, gal)
        a = evaluate_retrieval(q, gal, qp, gp, qc, gc, metric=metric, block=5)
        b = evaluate_distmat(d, qp, gp, qc, gc)
        assert a["cmc"] == pytest.approx(b["cmc"]) and a["mAP"] == pytest.approx(b["mAP"], abs=1e-6)
        assert a["mINP"] == pytest.approx(b["mINP"], abs=1e-6)


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="ap must be"):
        evaluate_distmat(torch.zeros(1, 2), [1], [1, 2], [0], [1, 1], ap="11point")
    with pytest.raises(ValueError, match="distmat is"):
        evaluate_distmat(torch.zeros(2, 2), [1], [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="no query has a valid"):
        evaluate_distmat(torch.zeros(1, 2), [1], [1, 2], [0], [0, 0])


def test_oracle_features_on_synthetic_data(tmp_path):
    """Features = identity code + camera noise give mAP near 1 with the real reader and cross-camera protocol."""
    meta = write_synthetic_reid(tmp_path, num_train_ids=4, num_test_ids=20, num_cams=5, seed=4)
    split = read_reid_dataset("market1501", tmp_path)
    codes = {int(k): torch.tensor(v) for k, v in meta["identity_codes"].items()}
    gen = torch.Generator().manual_seed(0)
    cam_offset = 0.05 * torch.randn(5, len(next(iter(codes.values()))), generator=gen)

    def features(records):
        rows = []
        for r in records:
            code = codes[r.pid] if r.pid in codes else torch.rand(cam_offset.shape[1], generator=gen)
            rows.append(code + cam_offset[r.camid] + 0.02 * torch.randn(code.shape, generator=gen))
        return torch.stack(rows)

    q, g = split.query, split.gallery
    out = evaluate_retrieval(
        features(q),
        features(g),
        [r.pid for r in q],
        [r.pid for r in g],
        [r.camid for r in q],
        [r.camid for r in g],
        metric="euclidean",
    )
    assert out["mAP"] > 0.97 and out["rank1"] == 1.0
    assert out["num_valid_queries"] == len(split.query)


@pytest.mark.parametrize(
    "case,shot",
    [
        ("single_shot_all", "single_shot_all"),
        ("multi_shot3_all", "multi_shot3_all"),
        ("single_shot_indoor", "single_shot_indoor"),
    ],
)
def test_sysu_protocol(golden, case, shot):
    """SYSU-MM01: cam-3 probes skip the cam-2 gallery, CMC counts each identity once (LbA/AGW = official MATLAB)."""
    c = golden["inputs"]["sysu_cross_modality"]
    g = c[case]
    out = evaluate_distmat(
        torch.tensor(g["distmat"]),
        c["q_pids"],
        g["g_pids"],
        c["q_cams"],
        g["g_cams"],
        max_rank=5,
        same_camera_rule=False,
        exclude_camera_pairs=[(3, 2)],
        cmc_unique_ids=True,
        no_match="zero_cmc",
    )
    _check(out, golden["entries"][f"sysu_lba_eval_sysu_{shot}"]["outputs"], n=5)
    _check(
        out,
        {
            "cmc": golden["entries"][f"sysu_official_matlab_{shot}"]["outputs"]["cmc"],
            "mAP": golden["entries"][f"sysu_official_matlab_{shot}"]["outputs"]["mAP"],
        },
        n=5,
    )


def test_ties_rank_the_match_first_and_matches_keep_order():
    dist = torch.tensor([[0.5, 0.5, 0.5, 0.2]])
    out = evaluate_distmat(dist, [1], [1, 2, 1, 3], [0], [1, 1, 1, 1], per_query=True)
    # valid order: 0.2 (pid 3), then the tied 0.5s with both matches ranked before the non-match: ranks 2 and 3
    assert float(out["ap"][0]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_sort_free_match_counts_equal_a_binary_search_in_sorted_rows():
    """The CPU float32 counting path gives the left binary-search positions of the sorted rows, ties, negative
    distances, +inf items and rows without matches included."""
    from cvlab_shared.metrics.retrieval import _count_below

    gen = np.random.default_rng(0)
    for _ in range(300):
        b, g, p = gen.integers(1, 12), gen.integers(1, 50), gen.integers(1, 8)
        work = torch.from_numpy(gen.integers(-4, 5, (b, g)).astype(np.float32) * 0.25)
        work[torch.from_numpy(gen.random((b, g)) < 0.1)] = float("inf")
        matches = work.gather(1, torch.from_numpy(gen.integers(0, g, (b, p))))
        matches[torch.from_numpy(gen.random((b, p)) < 0.3)] = float("inf")
        matches = matches.sort(1).values
        expected = torch.searchsorted(work.sort(1).values, matches)
        got = _count_below(work, matches)
        finite = torch.isfinite(matches)
        assert torch.equal(got[finite], expected[finite])
        assert bool((got[~finite] >= g).all())


def test_junk_columns_of_a_distance_matrix_count_as_removed():
    """Junk gallery items left in a precomputed matrix change nothing: same metrics as the matrix without them."""
    gen = torch.Generator().manual_seed(3)
    q_pids, q_cams = torch.randint(1, 6, (30,), generator=gen), torch.randint(0, 3, (30,), generator=gen)
    g_pids, g_cams = torch.randint(-1, 6, (200,), generator=gen), torch.randint(0, 3, (200,), generator=gen)
    dist = torch.rand(30, 200, generator=gen)
    dist[:, g_pids == -1] = -1.0  # junk closest of all: must not push any match down
    keep = g_pids != -1
    for unique in (False, True):
        with_junk = evaluate_distmat(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10, cmc_unique_ids=unique)
        without = evaluate_distmat(dist[:, keep], q_pids, g_pids[keep], q_cams, g_cams[keep], max_rank=10,
                                   cmc_unique_ids=unique)
        assert with_junk == without
