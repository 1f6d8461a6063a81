"""RetrievalEvaluator: the stateful metric gathers features across DDP ranks (2 CPU processes on gloo) and gives
the same numbers as one process evaluating everything; DistributedSampler padding duplicates are dropped."""

import json

import pytest
import torch.multiprocessing as mp
from reid_ddp_worker import problem, worker

from cvlab_shared.metrics.retrieval import RetrievalEvaluator, evaluate_retrieval


def test_evaluator_single_process_equals_function():
    feats, pids, cams, is_query = problem()
    metric = RetrievalEvaluator(metric="cosine", ap="trapezoid")
    metric.update(feats[:30], pids[:30], cams[:30], is_query[:30])
    metric.update(feats[30:], pids[30:], cams[30:], is_query[30:])
    got = metric.compute()
    q, g = is_query, ~is_query
    ref = evaluate_retrieval(feats[q], feats[g], pids[q], pids[g], cams[q], cams[g], metric="cosine", ap="trapezoid")
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert float(got[key]) == pytest.approx(ref[key])
    metric.reset()
    metric.update(feats, pids, cams, is_query)
    assert float(metric.compute()["mAP"]) == pytest.approx(ref["mAP"])


@pytest.mark.slow
def test_evaluator_under_ddp(tmp_path):
    out = tmp_path / "result"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    feats, pids, cams, is_query = problem()
    q, g = is_query, ~is_query
    ref = evaluate_retrieval(feats[q], feats[g], pids[q], pids[g], cams[q], cams[g], metric="euclidean")
    for rank in (0, 1):
        got = json.loads((tmp_path / f"result.{rank}").read_text())
        for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
            assert got[key] == pytest.approx(ref[key], abs=1e-6), (rank, key)
    assert 0.2 < ref["mAP"] < 0.99
