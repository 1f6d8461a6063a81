"""ACLS and baseline losses against the official implementations (golden/calibration.json), to 1e-5."""

import pytest
import torch
import torch.nn.functional as F

from acls import ACLSLoss, AdaptiveFocalLoss, FocalLoss, LabelSmoothingLoss, MbLSLoss
from acls.losses import CrossEntropyLoss, acls_regulariser, adaptive_gamma, build_loss, label_smoothing_loss
from cvlab_shared.reference import load_golden

TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return load_golden("calibration")


def _logits(golden, recipe):
    scale = float(recipe.rsplit("*", 1)[1]) if "*" in recipe else 1.0
    data = golden["inputs"]["logits_16x10"]
    return torch.tensor(data["logits"]) * scale, torch.tensor(data["targets"])


def test_acls_loss_and_gradient_match_official(golden):
    assert len(golden["acls"]["cases"]) == 4
    for case in golden["acls"]["cases"]:
        logits, targets = _logits(golden, case["logits"])
        logits.requires_grad_(True)
        loss_fn = ACLSLoss(**case["kwargs"])
        loss = loss_fn(logits, targets)
        loss.backward()
        assert loss.item() == pytest.approx(case["loss"], abs=TOL, rel=TOL), case["case"]
        assert loss_fn.components["ce"].item() == pytest.approx(case["loss_ce"], abs=TOL, rel=TOL)
        assert loss_fn.components["reg"].item() == pytest.approx(case["reg"], abs=TOL, rel=TOL)
        torch.testing.assert_close(logits.grad, torch.tensor(case["grad_wrt_logits"]), atol=TOL, rtol=TOL)


def test_label_smoothing_and_ce_match_official(golden):
    logits, targets = _logits(golden, "x")
    assert CrossEntropyLoss()(logits, targets).item() == pytest.approx(golden["label_smoothing"]["ce"], abs=TOL)
    for case in golden["label_smoothing"]["cases"]:
        assert LabelSmoothingLoss(case["alpha"])(logits, targets).item() == pytest.approx(case["loss"], abs=TOL)


def test_mbls_matches_official(golden):
    for case in golden["mbls"]["cases"]:
        logits, targets = _logits(golden, case["logits"])
        loss_fn = MbLSLoss(**case["kwargs"])
        assert loss_fn(logits, targets).item() == pytest.approx(case["loss"], abs=TOL)
        assert loss_fn.components["margin"].item() == pytest.approx(case["loss_margin_l1"], abs=TOL)


def test_acls_gradient_is_adaptive_and_conditional():
    """Below the margin the regulariser is silent; beyond it, its gradient grows with the excess (section 2.1)."""
    targets = torch.tensor([0])
    small = torch.tensor([[3.0, 0.0, -1.0]], requires_grad=True)
    ACLSLoss(3, margin=10.0)(small, targets).backward()
    torch.testing.assert_close(small.grad, torch.autograd.grad(F.cross_entropy(small, targets), small)[0])
    grads = []
    for top in (12.0, 14.0):
        logits = torch.tensor([[top, 0.0, -1.0]], requires_grad=True)
        reg_only = ACLSLoss(3, margin=10.0)
        reg_only(logits, targets)
        reg = reg_only.components["reg"]
        assert reg.item() > 0
        loss = reg_only(logits, targets) - F.cross_entropy(logits, targets)
        grads.append(torch.autograd.grad(loss, logits)[0])
    assert grads[1][0, 0] > grads[0][0, 0] > 0  # winner pushed down, harder when further beyond M
    assert grads[1][0, 2] < grads[0][0, 2] < 0  # trailing logit pulled up
    with pytest.raises(ValueError, match="num_classes=5"):
        ACLSLoss(5)(small, targets)


def test_focal_losses():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(32, 6, generator=g) * 3, torch.randint(0, 6, (32,), generator=g)
    assert FocalLoss(0.0)(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-6)
    assert FocalLoss(3.0)(logits, targets) < FocalLoss(1.0)(logits, targets)
    pt = torch.tensor([0.1, 0.3, 0.7])
    assert adaptive_gamma(pt, 3.0).tolist() == [5.0, 3.0, 3.0]
    flsd = AdaptiveFocalLoss(3.0)(logits, targets)
    assert FocalLoss(5.0)(logits, targets) <= flsd <= FocalLoss(3.0)(logits, targets) + 1e-6


def test_losses_accept_per_pixel_inputs_and_names():
    logits, targets = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    rows = logits.movedim(1, -1).reshape(-1, 4)
    for name in ("ce", "ls", "focal", "flsd", "mbls", "acls"):
        loss_fn = build_loss(name, num_classes=4)
        assert loss_fn(logits, targets).item() == pytest.approx(loss_fn(rows, targets.reshape(-1)).item(), abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("mixup", 4)


def test_label_smoothing_has_one_default_in_the_function_and_the_class():
    logits, targets = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.arange(6) % 4
    assert LabelSmoothingLoss().alpha == 0.05
    assert LabelSmoothingLoss()(logits, targets).item() == label_smoothing_loss(logits, targets)["loss"].item()


def test_ties_are_handled_as_the_docstring_says():
    logits = torch.tensor([[5.0, 5.0, 0.0, -4.0]], requires_grad=True)  # two tied winners
    margin = 1.0
    pos = acls_regulariser(logits, 1.0, 0.0, margin)
    neg = acls_regulariser(logits, 0.0, 1.0, margin)
    assert pos.item() == pytest.approx((5 - margin) ** 2)  # the maximum counted once, not once per tied logit
    assert neg.item() == pytest.approx(((5 - 0 - margin) ** 2 + (5 + 4 - margin) ** 2) / 3)  # ties left out, K-1 = 3
    (grad,) = torch.autograd.grad(pos, logits)
    assert grad[0, :2].sum().item() == pytest.approx(2 * (5 - margin)) and (grad[0, :2] != 0).sum() == 1
