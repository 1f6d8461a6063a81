"""Segmentation metrics: golden parity with DKD's Evaluator and ALIFE's Detectron2 evaluator, both conventions for
absent classes, a NumPy reference for the confusion matrix, DDP across two gloo processes, the picture."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cvlab_shared.data.segmentation import SYNTHIA_MIOU13_DROPPED, SYNTHIA_MISSING_TRAINIDS
from cvlab_shared.metrics.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    group_mean,
    iou_from_confusion,
    iou_table,
    segmentation_scores,
)
from cvlab_shared.reference import load_golden
from cvlab_shared.visualize.segmentation import colorize, save_segmentation_grid

TOL = 1e-6  # golden tolerance for metrics in percent


def golden(name):
    return {e["name"]: e for e in load_golden("segmentation")["entries"]}[name]


def test_dkd_evaluator_parity():
    entry = golden("dkd.inference_and_Evaluator")
    pred = torch.tensor(entry["outputs"]["pred"]["values"])
    gt = torch.tensor(entry["inputs"]["gt_test"]["values"])
    confmat = confusion_matrix(pred, gt, 6)
    assert confmat.tolist() == np.array(entry["outputs"]["confusion_matrix"]).astype(int).tolist()
    scores = segmentation_scores(confmat, [0, 1, 2, 3], [4, 5], absent="zero")
    expected = entry["outputs"]["mIoU"]
    # DKD subtracts 1e-6 in the IoU denominator: within 1e-6 % here
    assert iou_from_confusion(confmat).tolist() == pytest.approx(expected["by_class"], abs=TOL)
    for ours, theirs in (("mIoU", "overall"), ("mIoU_old", "old"), ("mIoU_new", "new"), ("hIoU", "harmonic")):
        assert scores[ours].item() == pytest.approx(expected[theirs], abs=TOL)
    assert scores["pixel_acc"].item() == pytest.approx(entry["outputs"]["pixel_acc"]["overall"], abs=TOL)
    assert scores["mean_acc"].item() == pytest.approx(entry["outputs"]["mean_acc"]["overall"], abs=TOL)


def test_alife_detectron2_evaluator_parity():
    entry = golden("alife.SemSegEvaluator_hIoU")
    pred = torch.tensor(entry["outputs"]["pred"]["values"])
    gt = torch.tensor(entry["inputs"]["gt_test"]["values"])
    metric = SegmentationMetrics(6, old_classes=[0, 1, 2, 3], new_classes=[4, 5], absent="present")
    logits = torch.tensor(entry["inputs"]["logits"]["values"])
    assert torch.equal(logits.argmax(1), pred)
    metric.update(logits, gt)  # scores: arg-max over dim 1
    scores, out = metric.compute(), entry["outputs"]
    assert metric.per_class_iou().tolist() == pytest.approx(out["per_IoU"], abs=TOL)
    pairs = (("mIoU", "mIoU"), ("mIoU_old", "prev_IoU"), ("mIoU_new", "curr_IoU"), ("hIoU", "hIoU"),
             ("pixel_acc", "pACC"), ("mean_acc", "mACC"))  # fmt: skip
    for ours, theirs in pairs:
        assert scores[ours].item() == pytest.approx(out[theirs], abs=TOL)


def test_absent_class_conventions():
    # classes 0..3; class 2 only predicted (never in GT), class 3 neither
    gt = torch.tensor([0, 0, 0, 1, 1, 1, 255])
    pred = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    confmat = confusion_matrix(pred, gt, 4)
    assert confmat.sum() == 6  # the 255 pixel is skipped whatever it was predicted as
    iou_zero = iou_from_confusion(confmat, "zero")
    assert iou_zero.tolist() == pytest.approx([100 * 2 / 3, 100 * 2 / 4, 0, 0])
    zero = segmentation_scores(confmat, [0, 1], [2, 3], "zero")
    assert zero["mIoU"].item() == pytest.approx((200 / 3 + 50) / 4)
    assert zero["mIoU_new"].item() == 0 and zero["hIoU"].item() == 0
    present = segmentation_scores(confmat, [0, 1], [2, 3], "present")
    assert torch.isnan(iou_from_confusion(confmat, "present")[2:]).all()
    assert present["mIoU"].item() == pytest.approx((200 / 3 + 50) / 3)  # class 2 predicted: counts as 0
    assert present["mIoU_old"].item() == pytest.approx((200 / 3 + 50) / 2)
    assert torch.isnan(present["mIoU_new"])
    with pytest.raises(ValueError, match="absent"):
        segmentation_scores(confmat, absent="skip")


def numpy_confusion(pred, target, num_classes):
    """Straightforward reference: one pass over pixels per (gt, pred) class pair present."""
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    for i in range(num_classes):
        rows = target == i
        for j in range(num_classes):
            out[i, j] = np.count_nonzero(rows & (pred == j))
    return out


def test_confusion_matrix_matches_numpy_reference_and_checks_inputs():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 9, (3, 20, 30), generator=generator)
    target[target == 8] = 255
    pred = torch.randint(0, 8, (3, 20, 30), generator=generator)
    ours = confusion_matrix(pred, target, 8)
    assert ours.dtype == torch.int64 and ours.device == pred.device
    assert np.array_equal(ours.numpy(), numpy_confusion(pred.numpy(), target.numpy(), 8))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.full((4,), 8), torch.zeros(4, dtype=torch.long), 8)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(pred[0], target, 8)


@pytest.mark.gpu
def test_confusion_matrix_stays_on_the_gpu():
    pred = torch.randint(0, 150, (4, 64, 64), device="cuda")
    target = torch.randint(0, 150, (4, 64, 64), device="cuda")
    ours = confusion_matrix(pred, target, 150)
    assert ours.is_cuda
    assert torch.equal(ours.cpu(), confusion_matrix(pred.cpu(), target.cpu(), 150))


def test_synthia_miou16_is_miou19_rescaled_when_the_missing_classes_score_zero():
    iou = torch.rand(19, generator=torch.Generator().manual_seed(0)).double() * 100
    iou[list(SYNTHIA_MISSING_TRAINIDS)] = 0
    has = [c for c in range(19) if c not in SYNTHIA_MISSING_TRAINIDS]
    assert group_mean(iou, has).item() == pytest.approx(iou.mean().item() * 19 / 16)  # DAFormer's conversion
    thirteen = [c for c in has if c not in SYNTHIA_MIOU13_DROPPED]
    assert len(thirteen) == 13 and group_mean(iou, thirteen).item() == pytest.approx(iou[thirteen].mean().item())


def test_iou_table_lists_every_class():
    table = iou_table(torch.tensor([50.0, 25.0, 12.5]), ["background", "cat", "dog"], new_classes=[2])
    assert "| 1 | cat | 25.00 | old |" in table and "| 2 | dog | 12.50 | new |" in table


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from cvlab_shared.metrics.segmentation import SegmentationMetrics

    def worker(rank, folder):
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
        data = torch.load(f"{folder}/data.pt")
        shard = slice(0, 5) if rank == 0 else slice(5, None)  # unequal shards
        results = {}
        for absent in ("zero", "present"):
            metric = SegmentationMetrics(7, old_classes=[0, 1, 2, 3], new_classes=[4, 5, 6], absent=absent)
            for pred, target in zip(data["pred"][shard], data["target"][shard]):
                metric.update(pred[None], target[None])
            results[absent] = {k: v.item() for k, v in metric.compute().items()}
            results[absent]["iou"] = metric.per_class_iou().tolist()
        json.dump(results, open(f"{folder}/rank{rank}.json", "w"))
        dist.destroy_process_group()

    if __name__ == "__main__":
        torch.multiprocessing.start_processes(worker, args=(sys.argv[1],), nprocs=2, start_method="fork")
    """
)


def test_ddp_metrics_equal_single_process(tmp_path):
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 7, (12, 16, 16), generator=generator)
    target[:, :2] = 255
    target[target == 6] = 5  # class 6 absent from the ground truth: the conventions differ
    noise = torch.randint(0, 7, (12, 16, 16), generator=generator)
    pred = torch.where(torch.rand(12, 16, 16, generator=generator) < 0.6, target.clamp(max=6), noise)
    torch.save({"pred": pred, "target": target}, tmp_path / "data.pt")
    (tmp_path / "ddp_metrics.py").write_text(DDP_SCRIPT)
    subprocess.run([sys.executable, str(tmp_path / "ddp_metrics.py"), str(tmp_path)], check=True, timeout=240)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for absent in ("zero", "present"):
        single = SegmentationMetrics(7, old_classes=[0, 1, 2, 3], new_classes=[4, 5, 6], absent=absent)
        single.update(pred, target)
        expected = {k: v.item() for k, v in single.compute().items()}
        expected["iou"] = single.per_class_iou().tolist()
        for rank, got in enumerate(ranks):
            for key, value in expected.items():
                assert got[absent][key] == pytest.approx(value, abs=1e-9, nan_ok=True), (absent, rank, key)
    assert ranks[0]["zero"]["mIoU_new"] < ranks[0]["present"]["mIoU_new"]  # class 6 only predicted


def test_prediction_grid_picture(tmp_path):
    images = torch.randn(5, 3, 24, 32)
    targets = torch.randint(0, 21, (5, 24, 32))
    targets[:, 0] = 255
    path = save_segmentation_grid(tmp_path / "pics" / "val.png", images, targets, targets.flip(-1), max_images=3)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size == (900, 735)
    assert colorize(torch.tensor([[0, 1, 255]])).tolist() == [[[0, 0, 0], [128, 0, 0], [224, 224, 192]]]
