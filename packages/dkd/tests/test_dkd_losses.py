"""Parity of the DKD losses, the decomposition, the novel-classifier init and inference with the official code."""

import pytest
import torch
import torch.nn.functional as F

from cvlab_shared.metrics.segmentation import confusion_matrix, segmentation_scores
from cvlab_shared.models.deeplab import IncrementalClassifier
from cvlab_shared.reference import load_golden
from dkd import DKDLoss, TeacherOutputs, ac_loss, kd_loss, mbce_loss, positive_negative_logits
from dkd.incremental import init_novel_classifier, predict

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def golden():
    entries = load_golden("segmentation")["entries"]
    return {e["name"]: e for e in entries if e["name"].startswith("dkd.")}


def t(entry, key, where="inputs"):
    value = entry[where][key]
    return torch.tensor(value["values"], dtype=getattr(torch, value["dtype"]))


def test_decomposition_and_head(golden):
    e = golden["dkd.forward_logits_and_decomposition"]
    for prefix, w, b, x in (("", "w_new", "b_new", "x_pl"), ("_old", "w_old", "b_old", "x_pl_old")):
        weight, bias, feature = t(e, w), t(e, b), t(e, x)
        head = IncrementalClassifier(16, [1, 3] if prefix else [1, 3, 2], detach_groups=[0])
        with torch.no_grad():
            for group in range(len(head.heads)):
                s = head.group_slice(group)
                head.heads[group].weight.copy_(weight[s].view(-1, 16, 1, 1))
                head.heads[group].bias.copy_(bias[s])
        small = head(feature)
        torch.testing.assert_close(small, t(e, f"logit{prefix}_small", "outputs"), **TOL)
        big = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
        torch.testing.assert_close(big, t(e, f"logit{prefix}", "outputs"), **TOL)
        pos, neg = positive_negative_logits(feature, head.weight()[1:])
        torch.testing.assert_close(pos, t(e, f"pos_reg{prefix}", "outputs"), **TOL)
        torch.testing.assert_close(neg, t(e, f"neg_reg{prefix}", "outputs"), **TOL)
        torch.testing.assert_close(pos + neg + head.bias()[1:, None, None], small[:, 1:], **TOL)


@pytest.mark.parametrize("pos_weight", [1, 2, 35])
def test_mbce_pos_weight(golden, pos_weight):
    e = golden["dkd.WBCELoss_mbce"]
    got = mbce_loss(t(e, "logit")[:, -2:], t(e, "label"), [4, 5], pos_weight)
    torch.testing.assert_close(got, t(e, f"loss_mbce_per_class_pos_weight_{pos_weight}", "outputs"), **TOL)


def test_incremental_step_terms(golden):
    e = golden["dkd.incremental_step_losses"]
    logit, logit_old, label = t(e, "logit"), t(e, "logit_old"), t(e, "label")
    torch.testing.assert_close(mbce_loss(logit[:, 4:], label, [4, 5]), t(e, "loss_mbce", "outputs"), **TOL)
    torch.testing.assert_close(kd_loss(logit[:, 1:4], logit_old[:, 1:4]), t(e, "loss_kd", "outputs"), **TOL)
    pos = kd_loss(t(e, "pos_reg")[:, :3], t(e, "pos_reg_old"))
    neg = kd_loss(t(e, "neg_reg")[:, :3], t(e, "neg_reg_old"))
    torch.testing.assert_close(pos, t(e, "loss_dkd_pos", "outputs"), **TOL)
    torch.testing.assert_close(neg, t(e, "loss_dkd_neg", "outputs"), **TOL)
    torch.testing.assert_close(ac_loss(logit[:, :1]), t(e, "loss_ac", "outputs"), **TOL)


def test_dkd_loss_total_from_model_outputs(golden):
    """DKDLoss from logits, features and classifier rows gives the official total (weights 1/5/5/5/1, summed)."""
    head = golden["dkd.forward_logits_and_decomposition"]
    e = golden["dkd.incremental_step_losses"]
    assert e["inputs"]["hyperparameters"] == {"mbce": 1, "kd": 5, "dkd_pos": 5, "dkd_neg": 5, "ac": 1}
    teacher = TeacherOutputs(t(e, "logit_old"), t(head, "x_pl_old"), t(head, "w_old")[1:])
    total, sums = DKDLoss()(t(e, "logit"), t(e, "label"), 3, t(head, "x_pl"), t(head, "w_new")[1:], teacher)
    assert total.item() == pytest.approx(e["outputs"]["total"], rel=1e-5, abs=1e-5)
    assert sums["kd"].item() == pytest.approx(sum(e["outputs"]["loss_kd"]["values"]), rel=1e-5)


def test_base_step(golden):
    e = golden["dkd.base_step_losses"]
    logit0, label0 = t(e, "logit0"), t(e, "label0")
    for pw in (1, 2):
        got = mbce_loss(logit0[:, 1:], label0, [1, 2, 3], pw)
        torch.testing.assert_close(got, t(e, f"loss_mbce_pos_weight_{pw}", "outputs"), **TOL)
    total, sums = DKDLoss(pos_weight=2)(logit0, label0, num_old=0)
    assert set(sums) == {"mbce", "ac"}
    assert total.item() == pytest.approx(e["outputs"]["total_pos_weight_2"], rel=1e-5, abs=1e-5)


def test_init_novel_classifier(golden):
    e = golden["dkd.init_novel_classifier"]
    w, b = t(e, "w_new"), t(e, "b_new")
    head = IncrementalClassifier(16, [1, 3, 2])
    with torch.no_grad():
        for group, s in enumerate((slice(0, 1), slice(1, 4), slice(4, 6))):
            head.heads[group].weight.copy_(w[s].view(-1, 16, 1, 1))
            head.heads[group].bias.copy_(b[s])
    init_novel_classifier(head)
    torch.testing.assert_close(head.heads[2].weight.flatten(1), t(e, "new_cls_weight_after", "outputs"))
    torch.testing.assert_close(head.heads[2].bias, t(e, "new_cls_bias_after", "outputs"))
    torch.testing.assert_close(head.weight()[:4], w[:4])


def test_inference_rule(golden):
    e = golden["dkd.inference_and_Evaluator"]
    pred = predict(t(e, "logit"))
    assert torch.equal(pred, t(e, "pred", "outputs"))
    confmat = confusion_matrix(pred, t(e, "gt_test"), 6)
    assert confmat.tolist() == e["outputs"]["confusion_matrix"]
    scores = segmentation_scores(confmat, [0, 1, 2, 3], [4, 5])
    miou = e["outputs"]["mIoU"]
    for ours, theirs in (("mIoU_old", "old"), ("mIoU_new", "new"), ("hIoU", "harmonic"), ("mIoU", "overall")):
        assert scores[ours].item() == pytest.approx(miou[theirs], abs=1e-4)  # official subtracts 1e-6 in the union


def test_distillation_needs_feature():
    with pytest.raises(ValueError, match="feature"):
        logits = torch.zeros(1, 4, 2, 2)
        DKDLoss()(logits, torch.zeros(1, 2, 2, dtype=torch.long), 2, teacher=TeacherOutputs(logits, None, None))
