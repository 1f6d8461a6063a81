"""Parity of MRL and M-NDCG with the official RankMixup code (golden values) and the properties of our defaults."""

import pytest
import torch

from cvlab_shared.reference import load_golden
from rankmixup import MixupLoss, MNDCGLoss, MRLLoss, mix
from rankmixup.losses import mrl_hinge, ndcg_per_sample, self_mix_mask

GOLDEN = load_golden("calibration")
LOGITS = torch.tensor(GOLDEN["inputs"]["logits_16x10"]["logits"])
TARGETS = torch.tensor(GOLDEN["inputs"]["logits_16x10"]["targets"])
MRL_CASES = GOLDEN["rankmixup_mrl"]["cases"]
MNDCG_CASES = GOLDEN["rankmixup_mndcg"]["cases"]
ATOL = 1e-5


def case_tensors(case):
    return torch.tensor(case["mixup_logits"]), torch.tensor(case["target_re"])


@pytest.mark.parametrize("case", MRL_CASES + MNDCG_CASES, ids=lambda c: c["case"])
def test_mix_reproduces_official_soft_labels(case):
    lam = torch.tensor(case["lam"], dtype=torch.float64)
    perm = torch.tensor(case["perm"])
    _, soft = mix(LOGITS, TARGETS, 10, lam, perm)
    torch.testing.assert_close(soft, torch.tensor(case["target_re"]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", MRL_CASES, ids=lambda c: c["case"])
def test_mrl_official_reduction_matches_golden(case):
    mixed, soft = case_tensors(case)
    out = MRLLoss(**case["kwargs"], reduction="official")(LOGITS, mixed, TARGETS, soft)
    assert out.loss.item() == pytest.approx(case["loss"], abs=ATOL)
    assert out.loss_ce.item() == pytest.approx(case["loss_ce"], abs=ATOL)
    assert out.loss_mixup.item() == pytest.approx(case["loss_mixup"], abs=ATOL)
    assert self_mix_mask(soft).tolist() == case["self_mixup_mask"]


@pytest.mark.parametrize("case", MRL_CASES, ids=lambda c: c["case"])
def test_mrl_per_sample_default_is_masked_mean(case):
    mixed, soft = case_tensors(case)
    out = MRLLoss(**case["kwargs"])(LOGITS, mixed, TARGETS, soft)
    assert out.loss_mixup.item() == pytest.approx(case["NOT_OFFICIAL_per_sample_masked_mean_hinge"], abs=ATOL)
    hinge = mrl_hinge(LOGITS, mixed, case["kwargs"]["margin"])
    mask = torch.tensor(case["self_mixup_mask"])
    assert out.loss_mixup.item() == pytest.approx((hinge * mask).mean().item(), abs=1e-6)
    assert out.loss.item() == pytest.approx(case["loss_ce"] + case["kwargs"]["alpha"] * out.loss_mixup.item(), abs=ATOL)


def test_mrl_runs_with_several_copies_where_official_crashes():
    case = MNDCG_CASES[0]
    mixed, soft = case_tensors(case)
    assert mixed.shape[0] == 3 * LOGITS.shape[0]
    out = MRLLoss(10, margin=2.0)(LOGITS, mixed, TARGETS, soft)
    hinge, mask = mrl_hinge(LOGITS, mixed, 2.0), self_mix_mask(soft)
    assert out.loss_mixup.item() == pytest.approx((hinge * mask).mean().item(), abs=1e-6)
    assert "48" in GOLDEN["rankmixup_mrl"]["num_mixup_3_behaviour"]
    with pytest.raises(ValueError, match="one mixed copy"):
        MRLLoss(10, reduction="official")(LOGITS, mixed, TARGETS, soft)


def test_mrl_hinge_pairs_each_mix_with_its_own_raw_sample():
    logits = torch.tensor([[5.0, 0.0], [1.0, 0.0]])
    mixed = torch.tensor([[4.0, 0.0], [3.0, 0.0], [0.0, 6.0], [0.0, 0.5]])  # copies 0 and 1, mixup-major
    hinge = mrl_hinge(logits, mixed, margin=1.0)
    torch.testing.assert_close(hinge, torch.tensor([0.0, 3.0, 2.0, 0.5]))


def test_mrl_gradient_lowers_mixed_confidence_and_raises_raw():
    logits = torch.zeros(2, 3, requires_grad=True)
    mixed = torch.zeros(2, 3, requires_grad=True)
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.7, 0.0, 0.3]])
    loss = MRLLoss(3, margin=1.0, alpha=1.0)(logits, mixed, torch.tensor([0, 1]), soft).loss_mixup
    loss.backward()
    assert (mixed.grad.max(dim=1).values > 0).all()  # descending pushes the mixed top logit down
    assert (logits.grad.min(dim=1).values < 0).all()  # and the raw top logit up


def test_self_mixes_are_masked_even_with_float_rounding():
    soft = torch.tensor([[0.3, 0.7], [1.0 - 1e-8, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert self_mix_mask(soft).tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("case", MNDCG_CASES, ids=lambda c: c["case"])
def test_mndcg_matches_golden(case):
    mixed, soft = case_tensors(case)
    out = MNDCGLoss(**case["kwargs"])(LOGITS, mixed, TARGETS, soft)
    assert out.loss.item() == pytest.approx(case["loss"], abs=ATOL)
    assert out.loss_ce.item() == pytest.approx(case["loss_ce"], abs=ATOL)
    assert out.loss_mixup.item() == pytest.approx(case["loss_mixup"], abs=ATOL)
    torch.testing.assert_close(ndcg_per_sample(LOGITS, mixed, soft), torch.tensor(case["per_sample_ndcg"]),
                               atol=ATOL, rtol=0)


def test_mndcg_is_zero_when_confidences_equal_relevances():
    # one raw sample with confidence 1 (very large logit) and mixes whose confidences equal their coefficients
    soft = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    logits = torch.tensor([[50.0, 0.0]])
    mixed = soft.log()
    assert ndcg_per_sample(logits, mixed, soft).item() == pytest.approx(1.0, abs=1e-6)
    over = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    assert ndcg_per_sample(logits, over, soft).item() < 0.99


def test_mixup_loss_is_soft_cross_entropy_and_regmixup_adds_raw_ce():
    lam = torch.tensor([0.7], dtype=torch.float64)
    perm = torch.tensor([[1, 0, 3, 2] + list(range(4, 16))])
    mixed_inputs, soft = mix(LOGITS, TARGETS, 10, lam, perm)
    plain = MixupLoss(10)(LOGITS, mixed_inputs, TARGETS, soft)
    expected = 0.7 * torch.nn.functional.cross_entropy(mixed_inputs, TARGETS, reduction="none") + \
        0.3 * torch.nn.functional.cross_entropy(mixed_inputs, TARGETS[perm[0]], reduction="none")
    assert plain.loss.item() == pytest.approx(expected.mean().item(), abs=1e-5)
    assert not plain.loss_ce.requires_grad
    reg = MixupLoss(10, raw_weight=1.0, mix_weight=0.5)(LOGITS, mixed_inputs, TARGETS, soft)
    assert reg.loss.item() == pytest.approx(MRL_CASES[0]["loss_ce"] + 0.5 * plain.loss.item(), abs=1e-5)


@pytest.mark.parametrize("loss", [MRLLoss(10), MNDCGLoss(10), MixupLoss(10)], ids=type)
def test_bad_shapes_raise(loss):
    with pytest.raises(ValueError):
        loss(LOGITS, torch.zeros(20, 10), TARGETS, torch.zeros(20, 10))
    with pytest.raises(ValueError):
        loss(LOGITS[:, :5], torch.zeros(16, 5), TARGETS, torch.zeros(16, 5))
