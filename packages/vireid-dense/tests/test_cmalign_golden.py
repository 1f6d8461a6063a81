"""CMAlign against the golden outputs of the official code (../shared/golden/reid_eval.json): the partner draws
(`lba_cmalign_pairs`), masks, matching probabilities, co-mask, reconstructions and both dense-triplet semantics
(`lba_cmalign_dense_triplet`)."""

import random

import pytest
import torch

from cvlab_shared.reference import load_golden
from vireid_dense import CMAlign, DenseTripletLoss
from vireid_dense.cmalign import cmalign_pairs, dense_triplet_loss

ATOL = 1e-6


@pytest.fixture(scope="module")
def golden():
    return load_golden("reid_eval")["entries"]


def test_pairs_replay_the_official_draws(golden):
    out = golden["lba_cmalign_pairs"]["outputs"]
    pos, neg = cmalign_pairs(8, 4, random.Random(0))
    assert pos.tolist() == out["pos"] and neg.tolist() == out["neg"]


def test_pairs_are_valid_for_other_seeds():
    pos, neg = cmalign_pairs(4, 3, random.Random(7))
    ids = torch.arange(24) % 12 // 3
    modality = torch.arange(24) // 12
    assert (ids[pos] == ids).all() and (modality[pos] != modality).all()
    assert (ids[neg] != ids).all() and (modality[neg] != modality).all()


def _case(golden):
    out = golden["lba_cmalign_dense_triplet"]["outputs"]
    inp = out["inputs"]
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    return out, t(inp["feat_visible"]), t(inp["feat_thermal"]), torch.tensor(inp["pos_idx"]), torch.tensor(inp["neg_idx"])


def test_cmalign_intermediates_and_paper_loss(golden):
    out, fv, ft, pos, neg = _case(golden)
    res = CMAlign(num_ids=2, num_pos=2, temperature=50)(fv, ft, pos, neg)
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    torch.testing.assert_close(res.mask, t(out["mask"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(res.prob_pos, t(out["matching_prob_pos"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(res.comask, t(out["comask_pos"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(res.recon_pos, t(out["recon_pos"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(res.recon_neg, t(out["recon_neg"]), atol=ATOL, rtol=0)
    assert float(res.loss) == pytest.approx(out["loss_intended"], abs=ATOL)


def test_legacy_semantics_reproduce_torch_1_7(golden):
    out, fv, ft, pos, neg = _case(golden)
    res = CMAlign(num_ids=2, num_pos=2, semantics="legacy")(fv, ft, pos, neg)
    assert float(res.loss) == pytest.approx(out["loss_official_torch_1_7"], abs=ATOL)
    feat = torch.cat([fv, ft])
    legacy = DenseTripletLoss(semantics="legacy")(feat, res.recon_pos, res.recon_neg, res.comask)
    paper = dense_triplet_loss(feat, res.recon_pos, res.recon_neg, res.comask)
    assert float(legacy) == pytest.approx(out["loss_official_torch_1_7"], abs=ATOL)
    assert float(paper) == pytest.approx(out["loss_intended"], abs=ATOL)
    with pytest.raises(ValueError, match="semantics"):
        DenseTripletLoss(semantics="broadcast")


def test_gradients_flow_through_features_not_masks(golden):
    _, fv, ft, pos, neg = _case(golden)
    fv, ft = fv.clone().requires_grad_(), ft.clone().requires_grad_()
    res = CMAlign(num_ids=2, num_pos=2)(fv, ft, pos, neg)
    res.loss.backward()
    assert fv.grad.abs().sum() > 0 and ft.grad.abs().sum() > 0
    assert not res.mask.requires_grad and not res.comask.requires_grad
