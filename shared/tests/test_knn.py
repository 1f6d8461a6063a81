import pytest
import torch

from cvlab_shared.metrics.knn import faiss_available, knn


def brute_force(q, g, k, metric):
    if metric == "cosine":
        q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    if metric == "l2":
        d = torch.cdist(q.double(), g.double()).pow(2)
        v, i = d.topk(k, dim=1, largest=False)
    else:
        v, i = (q.double() @ g.double().T).topk(k, dim=1)
    return v.float(), i


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_knn_matches_brute_force(metric, backend):
    if backend == "faiss":
        assert faiss_available(), "the workspace syncs faiss-cpu (extra 'cpu'): it must be importable in tests"
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(300, 32, generator=g), torch.randn(1000, 32, generator=g)
    v, i = knn(q, gal, 10, metric=metric, backend=backend, block=64)
    rv, ri = brute_force(q, gal, 10, metric)
    assert torch.equal(i, ri)
    torch.testing.assert_close(v, rv, rtol=1e-4, atol=1e-4)


def test_faiss_and_torch_agree():
    g = torch.Generator().manual_seed(1)
    q, gal = torch.randn(200, 16, generator=g), torch.randn(5000, 16, generator=g)
    for metric in ("cosine", "l2"):
        vt, it = knn(q, gal, 20, metric=metric, backend="torch", block=50)
        vf, if_ = knn(q, gal, 20, metric=metric, backend="faiss")
        assert torch.equal(it, if_)
        torch.testing.assert_close(vt, vf, rtol=1e-4, atol=1e-4)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="k must be"):
        knn(torch.randn(2, 3), torch.randn(4, 3), 5)
    with pytest.raises(ValueError, match="metric"):
        knn(torch.randn(2, 3), torch.randn(4, 3), 1, metric="hamming")
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        knn(torch.randn(2, 3), torch.randn(4, 5), 1)
