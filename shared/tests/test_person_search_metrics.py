"""Person-search evaluation: parity with the official eval_func.py on the golden synthetic gallery, and edge cases."""


import numpy as np
import pytest

from cvlab_shared.data.person_search import QueryRecord, SceneRecord
from cvlab_shared.metrics.person_search import (
    average_precision,
    evaluate_detection,
    evaluate_search,
    relaxed_iou_threshold,
)
from cvlab_shared.reference import load_golden


@pytest.fixture(scope="module")
def golden():
    g = load_golden("person_search")["eval_synthetic"]
    gallery = [
        SceneRecord("", s["img_name"], s["cam_id"], np.array(s["gt_boxes_xyxy"]), np.array(s["gt_pids"])) for s in g["gallery"]
    ]
    dets = [np.array([d["box_score"] for d in s["detections"]]) for s in g["gallery"]]
    feats = [np.array([d["feature"] for d in s["detections"]]) for s in g["gallery"]]
    queries = [QueryRecord("", q["img_name"], q["cam_id"], np.array(q["box_xyxy"]), q["pid"]) for q in g["queries"]]
    qfeats = np.array([q["query_box_feature"] for q in g["queries"]])
    return g, gallery, dets, feats, queries, qfeats


def test_detection_matches_golden(golden):
    g, gallery, dets, *_ = golden
    res = g["results"]
    got = evaluate_detection(gallery, dets, det_thresh=0.01)
    assert got["recall"] == pytest.approx(res["detection_all"]["recall"], abs=1e-12)
    assert got["ap"] == pytest.approx(res["detection_all"]["ap"], abs=1e-12)
    got = evaluate_detection(gallery, dets, det_thresh=0.01, labeled_only=True)
    assert got["recall"] == pytest.approx(res["detection_labeled_only"]["recall"], abs=1e-12)
    assert got["ap"] == pytest.approx(res["detection_labeled_only"]["ap_unused"], abs=1e-12)


@pytest.mark.parametrize(
    "key, kwargs",
    [
        ("prw_search_all_cameras(default ignore_cam_id=True)", {}),
        ("prw_search_cross_camera(ignore_cam_id=False)", {"ignore_cam_id": False}),
        ("prw_search_cbgm(k1=30,k2=4)", {"cbgm": True}),
    ],
)
def test_prw_search_matches_golden(golden, key, kwargs):
    g, gallery, dets, feats, queries, qfeats = golden
    if kwargs.get("cbgm"):
        kwargs["query_dets_feats"] = [np.array(q["cbgm_query_feats"]) for q in g["queries"]]
    result = evaluate_search(gallery, dets, feats, queries, qfeats, **kwargs)
    want = g["results"][key]
    np.testing.assert_allclose(result.aps, want["per_query_ap"], atol=1e-9)
    m = result.metrics()
    assert m["mAP"] == pytest.approx(want["mAP"], abs=1e-9)
    assert [m["top1"], m["top5"], m["top10"]] == pytest.approx(want["top1_5_10"], abs=1e-9)


def test_cuhk_protocol_search_matches_golden(golden):
    g, gallery, dets, feats, queries, qfeats = golden
    protocol = []
    for q in queries:  # every other frame, with the query's GT box where the frame holds it (the golden's TestG100)
        entries = []
        for s in gallery:
            if s.name == q.name:
                continue
            hit = np.flatnonzero(s.pids == q.pid)
            entries.append((s.name, s.boxes[hit[0]] if len(hit) else None))
        protocol.append(entries)
    result = evaluate_search(gallery, dets, feats, queries, qfeats, protocol=protocol)
    want = g["results"]["cuhk_search_gallery_protocol(gallery_size=100 file)"]
    np.testing.assert_allclose(result.aps, [p["ap"] for p in want["per_query"]], atol=1e-9)
    np.testing.assert_allclose(result.topk, [p["top1_5_10"] for p in want["per_query"]])
    assert result.metrics()["mAP"] == pytest.approx(want["mAP"], abs=1e-9)


def test_average_precision_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.random(40) < 0.3
        if not y.any():
            continue
        s = np.round(rng.random(40), 1)  # many ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_relaxed_threshold_for_small_boxes():
    assert relaxed_iou_threshold(np.array([0, 0, 10, 20])) == pytest.approx(200 / 600)
    assert relaxed_iou_threshold(np.array([0, 0, 50, 140])) == 0.5


def test_repeated_protocol_image_counts_its_gt_twice_but_detections_once():
    gallery = [SceneRecord("", "a", 1, np.array([[0, 0, 40, 100]]), np.array([1]))]
    dets = [np.array([[0, 0, 40, 100, 0.9]])]
    feats = [np.array([[1.0, 0.0]])]
    queries = [QueryRecord("", "q", 2, np.array([0, 0, 40, 100]), 1)]
    box = np.array([0, 0, 40, 100])
    once = evaluate_search(gallery, dets, feats, queries, np.array([[1.0, 0.0]]), protocol=[[("a", box)]])
    twice = evaluate_search(gallery, dets, feats, queries, np.array([[1.0, 0.0]]), protocol=[[("a", box), ("a", box)]])
    assert once.aps[0] == 1.0 and twice.aps[0] == 0.5


def test_protocol_naming_an_unknown_gallery_image_is_an_error():
    gallery = [SceneRecord("", "a", 1, np.array([[0, 0, 40, 100]]), np.array([1]))]
    with pytest.raises(ValueError, match="'b', not in the gallery"):
        evaluate_search(
            gallery,
            [np.zeros((0, 5))],
            [np.zeros((0, 2))],
            [QueryRecord("", "q", 1, np.zeros(4), 1)],
            np.ones((1, 2)),
            protocol=[[("b", None)]],
        )
