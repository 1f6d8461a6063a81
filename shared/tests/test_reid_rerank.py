"""k-reciprocal re-ranking, Jaccard distance and DBSCAN pseudo labels against the golden outputs of torchreid,
the official MATLAB re_ranking.m, Cluster-Contrast (faiss) and fast-reid; faiss and torch kNN paths agree."""

import numpy as np
import pytest
import torch

from cvlab_shared.metrics.knn import faiss_available
from cvlab_shared.metrics.rerank import cluster_pseudo_labels, evaluate_reranked, jaccard_distance, k_reciprocal_rerank
from cvlab_shared.metrics.retrieval import evaluate_distmat
from cvlab_shared.reference import load_golden

DIST_ATOL = 1e-5
BACKENDS = ["torch", "faiss"]


@pytest.fixture(scope="module")
def golden():
    return load_golden("reid_eval")


@pytest.fixture(scope="module")
def rerank_case(golden):
    c = golden["inputs"]["rerank_features"]
    return (
        torch.tensor(c["query_features"]),
        torch.tensor(c["gallery_features"]),
        c["q_pids"],
        c["g_pids"],
        c["q_camids"],
        c["g_camids"],
    )


def test_faiss_is_installed():
    assert faiss_available(), "the workspace syncs faiss-cpu (extra 'cpu'): it must be importable in tests"


@pytest.mark.parametrize("backend", BACKENDS)
def test_rerank_matches_torchreid_and_matlab(golden, rerank_case, backend):
    q, g, qp, gp, qc, gc = rerank_case
    final = k_reciprocal_rerank(q, g, k1=20, k2=6, lambda_value=0.3, backend=backend)
    e = golden["entries"]
    tr = e["rerank_torchreid_k20_k6_l0.3_euclidean_inputs"]["outputs"]
    np.testing.assert_allclose(final.numpy(), tr["final_dist"], atol=DIST_ATOL)
    np.testing.assert_allclose(
        final.numpy(), e["rerank_official_matlab_k20_k6_l0.3"]["outputs"]["final_dist"], atol=DIST_ATOL
    )
    out = evaluate_distmat(final, qp, gp, qc, gc, max_rank=10)
    np.testing.assert_allclose(out["cmc"], tr["cmc_top10"], atol=1e-6)
    assert out["mAP"] == pytest.approx(tr["mAP"], abs=1e-6)
    matlab = evaluate_distmat(final, qp, gp, qc, gc, max_rank=10, ap="trapezoid", no_match="zero")
    assert matlab["mAP"] == pytest.approx(e["rerank_official_matlab_k20_k6_l0.3"]["outputs"]["mAP"], abs=1e-6)
    base = evaluate_distmat(torch.cdist(q, g), qp, gp, qc, gc, max_rank=10)
    assert base["mAP"] == pytest.approx(e["rerank_baseline_eval"]["outputs"]["mAP"], abs=1e-6)


def test_rerank_odd_k1_python_and_matlab_rounding(golden, rerank_case):
    q, g = rerank_case[:2]
    o = golden["entries"]["rerank_odd_k1_divergence"]["outputs"]
    for k1 in (7, 6):
        for expansion in ("python", "matlab"):
            final = k_reciprocal_rerank(q, g, k1=k1, k2=3, lambda_value=0.3, expansion=expansion)
            np.testing.assert_allclose(final.numpy(), o[f"k{k1}_k3_{expansion}"], atol=DIST_ATOL)


def test_rerank_blocks_and_streamed_evaluation(rerank_case):
    q, g, qp, gp, qc, gc = rerank_case
    whole = k_reciprocal_rerank(q, g)
    blocked = k_reciprocal_rerank(q, g, block=3)
    torch.testing.assert_close(whole, blocked, atol=1e-6, rtol=0)
    streamed = evaluate_reranked(q, g, qp, gp, qc, gc, block=3, max_rank=10)
    direct = evaluate_distmat(whole, qp, gp, qc, gc, max_rank=10)
    assert streamed["mAP"] == pytest.approx(direct["mAP"]) and streamed["cmc"] == pytest.approx(direct["cmc"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_jaccard_matches_cluster_contrast(golden, rerank_case, backend):
    q, g = rerank_case[:2]
    jac = jaccard_distance(torch.cat([q, g]), k1=20, k2=6, backend=backend)
    expected = golden["entries"]["jaccard_clustercontrast_faiss_k20_k6"]["outputs"]["jaccard_query_gallery"]
    np.testing.assert_allclose(jac[:8, 8:].numpy(), expected, atol=DIST_ATOL)
    assert float(jac.min()) >= 0.0


def test_fastreid_style_mixed_rerank(golden, rerank_case):
    q, g, qp, gp, qc, gc = rerank_case
    feats = torch.cat([q, g])
    jac = jaccard_distance(feats, k1=20, k2=6)[:8, 8:]
    cos = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    out = evaluate_distmat(jac * 0.7 + cos * 0.3, qp, gp, qc, gc, max_rank=10)
    expected = golden["entries"]["rerank_fastreid_style_mix"]["outputs"]["eval"]
    np.testing.assert_allclose(out["cmc"], expected["cmc_top10"], atol=1e-6)
    assert out["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pseudo_labels_match_cluster_contrast(golden, backend):
    c = golden["inputs"]["cluster_features"]
    o = golden["entries"]["pseudo_labels_jaccard_dbscan"]["outputs"]
    p = o["params"]
    feats = torch.tensor(c["features"], dtype=torch.float32)
    jac = jaccard_distance(feats, k1=p["k1"], k2=p["k2"], backend=backend)
    np.testing.assert_allclose(jac[0].numpy(), o["jaccard_row0"], atol=DIST_ATOL)
    labels = cluster_pseudo_labels(jac, eps=p["eps"], min_samples=p["min_samples"])
    assert labels.tolist() == o["pseudo_labels"]
    assert len(set(labels.tolist()) - {-1}) == o["num_clusters"]
    sparse = jaccard_distance(feats, k1=p["k1"], k2=p["k2"], backend=backend, sparse=True)
    assert cluster_pseudo_labels(sparse, eps=p["eps"], min_samples=p["min_samples"]).tolist() == o["pseudo_labels"]
    np.testing.assert_allclose(sparse.toarray()[sparse.toarray() > 0], jac.numpy()[sparse.toarray() > 0], atol=1e-6)


def test_faiss_and_torch_paths_agree_on_larger_data():
    gen = torch.Generator().manual_seed(3)
    centers = torch.randn(24, 16, generator=gen)
    feats = torch.nn.functional.normalize(
        centers.repeat_interleave(6, 0) + 0.5 * torch.randn(144, 16, generator=gen), dim=1
    )
    a = jaccard_distance(feats, k1=20, k2=6, backend="torch", block=50)
    b = jaccard_distance(feats, k1=20, k2=6, backend="faiss", block=64)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    ra = k_reciprocal_rerank(feats[:30], feats[30:], backend="torch", block=16)
    rb = k_reciprocal_rerank(feats[:30], feats[30:], backend="faiss")
    torch.testing.assert_close(ra, rb, atol=1e-6, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k1 and k2"):
        jaccard_distance(torch.randn(5, 3), k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(torch.randn(2, 3), torch.randn(5, 3), lambda_value=2)
    with pytest.raises(ValueError, match="square"):
        cluster_pseudo_labels(np.zeros((2, 3)))
