"""Parity with every `alife.*` entry of the golden file (official ALIFE code run on a toy step, CPU float32)."""

import pytest
import torch
import torch.nn.functional as F

from alife import ALILoss, CayleyRotation, FeatureMemory, ReplayLoss, init_like_mib
from alife.losses import (
    ali_map,
    combined_labels,
    focal_loss,
    kd_map,
    memory_ce,
    unbiased_ce,
    unbiased_kd,
)
from alife.model import predict
from alife.rotation import rotation_objective
from cvlab_shared.metrics.segmentation import SegmentationMetrics
from cvlab_shared.reference import load_golden

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def golden():
    entries = load_golden("segmentation")["entries"]
    return {e["name"]: e for e in entries if e["name"].startswith("alife.")}


def t(entry, key, where="inputs"):
    value = entry[where][key]
    return torch.tensor(value["values"], dtype=getattr(torch, value["dtype"]))


def test_every_alife_entry_has_a_test(golden):
    tested = {"alife.step1_losses", "alife.mib_unbiased_losses", "alife.step3_losses", "alife.cayley_rot",
              "alife.train_matrices_iteration_and_update_mem", "alife.init_like_MiB", "alife.SemSegEvaluator_hIoU"}
    assert set(golden) == tested


def test_logits_from_features(golden):
    """The head: 1x1 classifiers, bilinear upsampling with align_corners=True (ALIFE)."""
    e = golden["alife.step1_losses"]
    small = torch.einsum("nchw,kc->nkhw", t(e, "x_pl"), t(e, "w_new")) + t(e, "b_new").view(1, -1, 1, 1)
    big = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(big, t(e, "logits"), **TOL)


def test_step1_losses(golden):
    e = golden["alife.step1_losses"]
    logits, old, gt = t(e, "logits"), t(e, "logits_old"), t(e, "gt")
    torch.testing.assert_close(ali_map(logits, old), t(e, "ali_map", "outputs"), **TOL)
    torch.testing.assert_close(kd_map(logits, old), t(e, "kd_map", "outputs"), **TOL)
    _, parts = ALILoss()(logits, old, gt)
    assert parts["ali"].item() == pytest.approx(e["outputs"]["loss_ali_unweighted"], rel=1e-5)
    assert parts["kd"].item() == pytest.approx(e["outputs"]["loss_kd_unweighted"], rel=1e-5)
    assert parts["ce"].item() == pytest.approx(e["outputs"]["loss_ce"], rel=1e-5)
    for name, (w_ali, w_kd) in e["inputs"]["config_weights_(ALI,KD)"].items():
        total, _ = ALILoss(w_ali, w_kd)(logits, old, gt)
        assert total.item() == pytest.approx(e["outputs"]["totals"][name], rel=1e-5), name


def test_ali_is_cross_entropy_from_old_to_new_softmax(golden):
    e = golden["alife.step1_losses"]
    logits, old = t(e, "logits"), t(e, "logits_old")
    soft_ce = -(old.softmax(1) * logits.log_softmax(1)[:, : old.shape[1]]).sum(1)
    torch.testing.assert_close(ali_map(logits, old), soft_ce, atol=1e-5, rtol=0)


def test_mib_unbiased_losses(golden):
    e = golden["alife.mib_unbiased_losses"]
    logits, old, gt = t(e, "logits"), t(e, "logits_old"), t(e, "gt")
    assert unbiased_ce(logits, gt, num_old=4).item() == pytest.approx(e["outputs"]["unbiased_ce"], rel=1e-5)
    assert unbiased_kd(logits, old).item() == pytest.approx(e["outputs"]["unbiased_kd"], rel=1e-5)


def test_step3_losses(golden):
    e = golden["alife.step3_losses"]
    logits, old, gt, mem = t(e, "logits"), t(e, "logits_old"), t(e, "gt"), t(e, "MEM")
    weight, bias = t(e, "w_new"), t(e, "b_new")
    comb = combined_labels(gt, old)
    assert torch.equal(comb, t(e, "gt_comb", "outputs"))
    assert focal_loss(logits, comb).item() == pytest.approx(e["outputs"]["loss_focal"], rel=1e-5)
    torch.testing.assert_close(mem.reshape(-1, 16) @ weight.t() + bias, t(e, "logits_mem", "outputs"), **TOL)
    assert memory_ce(mem, weight, bias).item() == pytest.approx(e["outputs"]["loss_mem_ce"], rel=1e-5)
    for name, (w_ali, w_mem) in e["inputs"]["config_weights_(ALI,MEM)"].items():
        total, parts = ReplayLoss(w_ali, w_mem)(logits, old, gt, mem, weight, bias)
        assert parts["ali"].item() == pytest.approx(e["outputs"]["loss_ali_unweighted"], rel=1e-5)
        assert total.item() == pytest.approx(e["outputs"]["totals"][name], rel=1e-5), name


def _rotation(e):
    rot = CayleyRotation(2, 6)
    with torch.no_grad():
        rot.theta.copy_(torch.stack([t(e, "theta_0"), t(e, "theta_1")]))
    return rot


def test_cayley_rotation(golden):
    e = golden["alife.cayley_rot"]
    rot = _rotation(e)
    matrices = rot.matrices()
    torch.testing.assert_close(matrices, t(e, "R", "outputs"), **TOL)
    torch.testing.assert_close(rot.matrices_loop(), matrices, **TOL)
    # official forward: input (D, K), column k rotated by R_k; ours takes rows
    torch.testing.assert_close(rot(t(e, "input").t()).t(), t(e, "forward", "outputs"), **TOL)
    eye = torch.eye(6).expand(2, 6, 6)
    torch.testing.assert_close(matrices.transpose(1, 2) @ matrices, eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(2), atol=1e-5, rtol=0)


def test_rotation_starts_near_identity_and_stays_orthogonal_when_trained():
    torch.manual_seed(0)
    rot = CayleyRotation(3, 32)
    assert (rot.matrices() - torch.eye(32)).abs().max() < 0.1
    optimizer = torch.optim.Adam(rot.parameters(), lr=0.1)
    target = torch.randn(3, 32)
    source = torch.randn(3, 32)
    for _ in range(30):
        loss = (1 - F.cosine_similarity(rot(source), target, dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    matrices = rot.matrices().detach()
    assert loss.item() < 0.5
    torch.testing.assert_close(matrices.transpose(1, 2) @ matrices, torch.eye(32).expand(3, 32, 32), atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(matrices), torch.ones(3), atol=1e-4)


def test_rotation_training_iteration_and_memory_update(golden):
    e = golden["alife.train_matrices_iteration_and_update_mem"]
    out = e["outputs"]
    matrices = t(e, "R")
    total, parts = rotation_objective(
        matrices, t(e, "memory"), t(e, "fea_prev"), t(e, "fea_curr"), t(e, "Wc"), t(e, "bc"),
        temperature=e["inputs"]["TEMP"], lam=e["inputs"]["LAMBDA"],
    )
    for key in ("pixel_weights", "rep_prev", "rep_curr", "rep_hat", "logits"):
        torch.testing.assert_close(parts[key], t(e, key, "outputs"), **TOL)
    lam = e["inputs"]["LAMBDA"]  # the golden losses are the weighted terms
    assert (1 - lam) * parts["ce"].item() == pytest.approx(out["loss_ce"], rel=1e-5)
    assert lam * parts["cs"].item() == pytest.approx(out["loss_cs"], rel=1e-5)
    assert total.item() == pytest.approx(out["loss_total"], rel=1e-5)
    updated = FeatureMemory(t(e, "memory")).rotated(matrices)
    torch.testing.assert_close(updated.features, t(e, "updated_memory", "outputs"), **TOL)


def test_init_like_mib(golden):
    e = golden["alife.init_like_MiB"]
    steps = golden["alife.step1_losses"]
    weight, bias = t(steps, "w_new").clone(), t(steps, "b_new").clone()
    n_new = e["inputs"]["n_new"]
    torch.testing.assert_close(weight[0], t(e, "w_bg"))
    init_like_mib(weight, bias, n_new)
    torch.testing.assert_close(weight[-n_new:], t(e, "new_rows_weight", "outputs"))
    assert torch.allclose(bias[-n_new:], torch.tensor(e["outputs"]["new_bias"]))
    assert bias[0].item() == pytest.approx(e["outputs"]["bg_bias_after"], rel=1e-6)
    torch.testing.assert_close(weight[1:4], t(steps, "w_new")[1:4])  # old rows untouched


def test_evaluator_hiou(golden):
    e = golden["alife.SemSegEvaluator_hIoU"]
    out = e["outputs"]
    pred = predict(t(e, "logits"))
    assert torch.equal(pred, t(e, "pred", "outputs"))
    metric = SegmentationMetrics(6, [0, 1, 2, 3], [4, 5], absent="present")
    metric.update(pred, t(e, "gt_test"))
    scores = metric.compute()
    for ours, theirs in (("mIoU", "mIoU"), ("mIoU_old", "prev_IoU"), ("mIoU_new", "curr_IoU"), ("hIoU", "hIoU"),
                         ("mean_acc", "mACC"), ("pixel_acc", "pACC")):
        assert scores[ours].item() == pytest.approx(out[theirs], abs=1e-6), ours
    per_class = metric.per_class_iou()
    assert per_class.tolist() == pytest.approx(out["per_IoU"], abs=1e-6)
