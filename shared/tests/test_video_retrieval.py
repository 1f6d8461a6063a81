"""Video evaluation (`evaluate_video`) against the golden STMN `Video_Cmc`, torchreid and official MARS MATLAB
outputs (../shared/golden/reid_eval.json), and an oracle-feature check on the synthetic MARS writer."""

import numpy as np
import pytest
import torch

from cvlab_shared.data.synthetic_video import write_synthetic_video
from cvlab_shared.data.video import read_mars
from cvlab_shared.metrics.video_retrieval import evaluate_video
from cvlab_shared.reference import load_golden


@pytest.fixture(scope="module")
def case():
    golden = load_golden("reid_eval")
    return golden["inputs"]["video_tracklet_features"], golden["entries"]


@pytest.mark.parametrize("entry", ["video_stmn_Video_Cmc", "video_torchreid_eval"])
def test_mars_gallery_with_queries_inside_matches_stmn_and_torchreid(case, entry):
    inputs, entries = case
    out = evaluate_video(torch.tensor(inputs["features"]), inputs["ids"], inputs["cams"], inputs["query_idx"])
    expected = entries[entry]["outputs"]
    np.testing.assert_allclose(out["cmc"][:10], expected["cmc_top10"], atol=1e-6)
    assert out["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert out["num_queries"] == 7 and "rank20" in out


def test_trapezoid_ap_matches_the_official_mars_matlab_code(case):
    inputs, entries = case
    out = evaluate_video(
        torch.tensor(inputs["features"]), inputs["ids"], inputs["cams"], inputs["query_idx"], ap="trapezoid"
    )
    expected = entries["video_mars_official_matlab"]["outputs"]
    np.testing.assert_allclose(out["cmc"][:10], expected["cmc_top10"], atol=1e-6)
    assert out["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_removing_the_queries_from_the_gallery_changes_the_result(case):
    inputs, _ = case
    n = len(inputs["ids"])
    others = [i for i in range(n) if i not in set(inputs["query_idx"])]
    kept = evaluate_video(torch.tensor(inputs["features"]), inputs["ids"], inputs["cams"], inputs["query_idx"])
    removed = evaluate_video(
        torch.tensor(inputs["features"]), inputs["ids"], inputs["cams"], inputs["query_idx"], others
    )
    assert kept["mAP"] != pytest.approx(removed["mAP"])


def test_query_identity_absent_from_the_gallery_is_an_error():
    feats = torch.randn(4, 3)
    with pytest.raises(ValueError, match="no tracklet in the gallery"):
        evaluate_video(feats, [1, 2, 2, 3], [0, 0, 1, 1], [0], [1, 2, 3])


def test_oracle_identity_features_give_perfect_retrieval_on_the_synthetic_mars(tmp_path):
    meta = write_synthetic_video(tmp_path, num_train_ids=2, num_test_ids=6, max_frames=3, image_size=(16, 8))
    split = read_mars(tmp_path)
    g = torch.Generator().manual_seed(0)
    codes = {int(k): torch.tensor(v) for k, v in meta["identity_codes"].items()}
    dim = len(next(iter(codes.values())))
    feats = torch.stack([codes[t.pid] if t.pid > 0 else torch.randn(dim, generator=g) for t in split.test])
    feats = feats + 1e-3 * torch.randn(feats.shape, generator=g)
    out = evaluate_video(feats, [t.pid for t in split.test], [t.camid for t in split.test], split.query_idx)
    assert out["mAP"] == pytest.approx(1.0) and out["rank1"] == 1.0
