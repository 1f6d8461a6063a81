"""OIM, LOIM and ProtoNorm against the official implementation's golden outputs (values, gradients, tables)."""

import pytest
import torch
import torch.nn.functional as F

from cvlab_shared.reference import load_golden
from oimnet_pp import LOIMLoss, OIMLoss, ProtoNorm

T = lambda v: torch.tensor(v, dtype=torch.float32)
ATOL = 1e-5


@pytest.fixture(scope="module")
def g():
    return load_golden("person_search")


def make(cls, g, **kw):
    i = g["inputs"]
    loss = cls(256, i["num_pids (LUT_SIZE)"], i["cq_size (CQ_SIZE)"], momentum=0.5, scalar=30.0, **kw)
    loss.lut.copy_(T(i["lut_init"]["values"]))
    loss.cq.copy_(T(i["cq_init"]["values"]))
    loss.header_cq.fill_(i["header_cq_init"])
    return loss


def labels_per_image(g):
    y = torch.tensor(g["inputs"]["roi_labels"])
    return [y[:6], y[6:]]


@pytest.mark.parametrize("name", ["oim", "loim"])
def test_oim_and_loim_match_golden(g, name):
    want = g[name]
    loss_fn = make(OIMLoss if name == "oim" else LOIMLoss, g)
    emb = T(g["inputs"]["emb"]["values"]).requires_grad_(True)
    ious = T(g["inputs"]["ious_raw"]["values"]) if name == "loim" else None
    if name == "oim":
        keep = torch.tensor(g["inputs"]["roi_labels"]) > 0
        torch.testing.assert_close(loss_fn.logits(emb[keep]), T(want["logits_kept_rois"]["values"]), atol=ATOL, rtol=0)
    loss = loss_fn(emb, labels_per_image(g), ious)
    loss.backward()
    assert loss.item() == pytest.approx(want["loss"], abs=ATOL)
    torch.testing.assert_close(emb.grad, T(want["grad_emb"]["values"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(loss_fn.lut, T(want["lut_after"]["values"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(loss_fn.cq, T(want["cq_after"]["values"]), atol=ATOL, rtol=0)
    assert int(loss_fn.header_cq) == want["header_cq_after"]


def test_a_vectorised_mean_update_would_differ(g):
    """The golden's repeated identity (label 3, three RoIs) must be updated sequentially, not once with the mean."""
    seq = make(OIMLoss, g)
    emb = T(g["inputs"]["emb"]["values"])
    seq(emb, labels_per_image(g))
    y = torch.tensor(g["inputs"]["roi_labels"])
    mean = F.normalize(0.5 * T(g["inputs"]["lut_init"]["values"])[2] + 0.5 * emb[y == 3].mean(0), dim=0)
    assert (seq.lut[2] - mean).abs().max() > 1e-3
    torch.testing.assert_close(seq.lut[2], T(g["oim"]["lut_after"]["values"])[2], atol=ATOL, rtol=0)


def test_eval_mode_leaves_the_tables_alone(g):
    loss_fn = make(OIMLoss, g).eval()
    before = loss_fn.lut.clone()
    loss_fn(T(g["inputs"]["emb"]["values"]), labels_per_image(g))
    torch.testing.assert_close(loss_fn.lut, before)


@pytest.mark.parametrize("name", ["oim", "loim"])
def test_float16_tables_track_the_float32_ones(g, name):
    """The official fp16 buffers: loss, gradient and updated tables close to the float32 golden; storage stays fp16."""
    want = g[name]
    half = make(OIMLoss if name == "oim" else LOIMLoss, g, table_dtype="float16")
    assert half.lut.dtype == half.cq.dtype == torch.float16
    emb = T(g["inputs"]["emb"]["values"]).requires_grad_(True)
    ious = T(g["inputs"]["ious_raw"]["values"]) if name == "loim" else None
    loss = half(emb, labels_per_image(g), ious)
    loss.backward()
    assert loss.item() == pytest.approx(want["loss"], abs=2e-3)  # fp32 golden: loss ~ 1e-4 and gradient ~ 4e-4 off
    torch.testing.assert_close(emb.grad, T(want["grad_emb"]["values"]), atol=2e-3, rtol=0)
    assert half.lut.dtype == half.cq.dtype == torch.float16  # the update writes back in the table dtype
    torch.testing.assert_close(half.lut.float(), T(want["lut_after"]["values"]), atol=1e-3, rtol=0)
    torch.testing.assert_close(half.cq.float(), T(want["cq_after"]["values"]), atol=1e-3, rtol=0)
    assert int(half.header_cq) == want["header_cq_after"]
    assert (half.lut.float() - T(g["inputs"]["lut_init"]["values"]).half().float()).abs().max() > 1e-2  # it moved


def test_float16_features_as_under_autocast(g):
    """fp16 embeddings (what CUDA autocast feeds the loss) with fp16 tables: an fp32 loss, an fp16 gradient close
    to the float32 golden one, fp16 tables close to the golden update."""
    half = make(OIMLoss, g, table_dtype="float16")
    emb = T(g["inputs"]["emb"]["values"]).half().requires_grad_(True)
    loss = half(emb, labels_per_image(g))
    loss.backward()
    assert loss.dtype == torch.float32 and emb.grad.dtype == torch.float16
    assert loss.item() == pytest.approx(g["oim"]["loss"], abs=2e-3)
    torch.testing.assert_close(emb.grad.float(), T(g["oim"]["grad_emb"]["values"]), atol=3e-3, rtol=0)
    assert half.lut.dtype == torch.float16
    torch.testing.assert_close(half.lut.float(), T(g["oim"]["lut_after"]["values"]), atol=1e-3, rtol=0)


def test_unknown_table_dtype_is_an_error():
    with pytest.raises(ValueError, match="table_dtype"):
        OIMLoss(8, 4, 4, table_dtype="bfloat16")


def test_loim_without_ious_is_an_error(g):
    with pytest.raises(ValueError, match="IoU"):
        make(LOIMLoss, g)(T(g["inputs"]["emb"]["values"]), labels_per_image(g))


def test_protonorm_1d_matches_golden(g):
    want = g["protonorm_1d"]
    x = T(want["inputs"]["x_pn"]).requires_grad_(True)
    targets = torch.tensor(want["inputs"]["targets"])
    pn = ProtoNorm(256).train()
    out = pn(x, targets)
    torch.testing.assert_close(out, T(want["out_train"]["values"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(F.normalize(out), T(want["emb_after_l2"]["values"]), atol=ATOL, rtol=0)
    torch.manual_seed(2)
    w = torch.randn(12, 256)
    (out * w).sum().backward()
    torch.testing.assert_close(x.grad, T(want["grad_x"]["values"]), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(pn.running_mean, T(want["running_mean"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(pn.running_var, T(want["running_var"]), atol=1e-4, rtol=0)
    assert int(pn.num_batches_tracked) == want["num_batches_tracked"]
    pn.eval()
    out_eval = pn(x.detach()[:4] * 0.5 - 0.25)
    torch.testing.assert_close(out_eval, T(want["out_eval"]["values"]), atol=ATOL, rtol=0)


def test_protonorm_mean_is_the_prototype_mean_not_the_batch_mean(g):
    from oimnet_pp import prototype_mean

    want = g["protonorm_1d"]
    x, targets = T(want["inputs"]["x_pn"]), torch.tensor(want["inputs"]["targets"])
    torch.testing.assert_close(prototype_mean(x, targets), T(want["prototype_mean"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(x.mean(0), T(want["batch_mean_for_contrast"]), atol=ATOL, rtol=0)


def test_protonorm_2d_matches_golden(g):
    want = g["protonorm_2d"]
    x = T(want["inputs"]["x"]).reshape(want["inputs"]["x_shape"])
    pn = ProtoNorm(8).train()
    out = pn(x, torch.tensor(want["inputs"]["targets"]))
    torch.testing.assert_close(out.reshape(6, -1), T(want["out_train"]["values_flat_per_roi"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(pn.running_mean, T(want["running_mean"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(pn.running_var, T(want["running_var"]), atol=ATOL, rtol=0)


def test_protonorm_l2_loim_pipeline_matches_golden(g):
    want = g["pipeline_protonorm_l2_loim"]
    x = T(g["protonorm_1d"]["inputs"]["x_pn"]).requires_grad_(True)
    targets = torch.tensor(g["inputs"]["roi_labels"])
    loss_fn = make(LOIMLoss, g)
    emb = F.normalize(ProtoNorm(256).train()(x, targets))
    loss = loss_fn(emb, labels_per_image(g), T(g["inputs"]["ious_raw"]["values"]))
    loss.backward()
    assert loss.item() == pytest.approx(want["loss"], abs=ATOL)
    torch.testing.assert_close(x.grad, T(want["grad_x_pn"]["values"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(loss_fn.lut, T(want["lut_after"]["values"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(loss_fn.cq, T(want["cq_after"]["values"]), atol=ATOL, rtol=0)
    assert int(loss_fn.header_cq) == want["header_cq_after"]


def test_protonorm_in_training_without_targets_is_an_error():
    with pytest.raises(ValueError, match="one target per RoI"):
        ProtoNorm(4).train()(torch.randn(3, 4))


def test_queue_wraps_and_keeps_the_last_writes():
    loss_fn = OIMLoss(2, num_pids=1, cq_size=3)
    x = F.normalize(torch.randn(5, 2), dim=1)
    loss_fn(x, torch.full((5,), 5555))
    assert int(loss_fn.header_cq) == 2
    torch.testing.assert_close(loss_fn.cq, x[[3, 4, 2]])
