"""On a CUDA device, evaluation, re-ranking and the Jaccard distance give the CPU numbers (run with --gpu)."""

import pytest
import torch

from cvlab_shared.metrics.rerank import jaccard_distance, k_reciprocal_rerank
from cvlab_shared.metrics.retrieval import evaluate_retrieval


@pytest.mark.gpu
def test_gpu_matches_cpu():
    assert torch.cuda.is_available(), "--gpu was given but no CUDA device is visible"
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 64, generator=gen)
    pids = torch.arange(40).repeat_interleave(8)
    cams = torch.arange(8).repeat(40)
    feats = torch.nn.functional.normalize(centres[pids] + 0.9 * torch.randn(320, 64, generator=gen), dim=1)
    q = cams == 0
    cpu = evaluate_retrieval(feats[q], feats[~q], pids[q], pids[~q], cams[q], cams[~q], block=7)
    gpu = evaluate_retrieval(feats[q].cuda(), feats[~q].cuda(), pids[q], pids[~q], cams[q], cams[~q], block=7)
    for key in ("rank1", "mAP", "mINP"):
        assert gpu[key] == pytest.approx(cpu[key], abs=1e-6)
    torch.testing.assert_close(
        k_reciprocal_rerank(feats[q].cuda(), feats[~q].cuda()).cpu(),
        k_reciprocal_rerank(feats[q], feats[~q]),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(jaccard_distance(feats.cuda()).cpu(), jaccard_distance(feats), atol=1e-5, rtol=0)
