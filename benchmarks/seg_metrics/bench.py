"""Confusion-matrix evaluation speed: `cvlab_shared.metrics.segmentation.confusion_matrix` (one torch.bincount on
the device of the predictions) against NumPy references computed in the same run on the same labels.

References: (1) the straightforward per-class loop (intersection and union of each class by boolean masks),
(2) NumPy bincount per image, as DKD's / SSUL's `Evaluator.add_batch` does. Every method's per-class IoU must
agree (and both confusion matrices exactly) before a time is printed.

    uv run python benchmarks/seg_metrics/bench.py [--images 100] [--size 512] [--classes 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from cvlab_shared.metrics.segmentation import confusion_matrix, iou_from_confusion


def per_class_loop_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """Reference 1: IoU of each class from boolean masks, one class at a time."""
    valid = target != ignore
    iou = np.zeros(num_classes)
    for c in range(num_classes):
        is_pred, is_true = (pred == c) & valid, target == c
        union = np.count_nonzero(is_pred | is_true)
        iou[c] = 100 * np.count_nonzero(is_pred & is_true) / max(union, 1)
    return iou


def numpy_bincount_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Reference 2: per image, keep 0 <= gt < num_classes and bincount num_classes * gt + pred."""
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred, target, strict=True):
        keep = (t >= 0) & (t < num_classes)
        out += np.bincount(num_classes * t[keep].astype(int) + p[keep], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    return out


def iou_of(confmat: np.ndarray) -> np.ndarray:
    tp = np.diag(confmat).astype(np.float64)
    return 100 * tp / np.maximum(confmat.sum(0) + confmat.sum(1) - tp, 1)


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), result


def make_labels(images: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 labels like a loader and an arg-max give: target with 10 % void, pred = target with 30 % noise."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (images, size, size), generator=generator)
    target[torch.rand(images, size, size, generator=generator) < 0.1] = 255
    noise = torch.randint(0, classes, (images, size, size), generator=generator)
    pred = torch.where(torch.rand(images, size, size, generator=generator) < 0.3, noise, target.clamp(max=classes - 1))
    return pred, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    c = options.classes
    pred, target = make_labels(options.images, options.size, c, options.seed)
    pred_np, target_np = pred.numpy(), target.numpy()
    print(f"{options.images} images {options.size}x{options.size}, {c} classes, int64 labels, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")  # fmt: skip

    rows = []
    t_ours, ours = best_time(lambda: confusion_matrix(pred, target, c), options.repeats)
    iou_ours = iou_from_confusion(ours).numpy()
    t_loop, iou_loop = best_time(lambda: per_class_loop_iou(pred_np, target_np, c), 1)
    assert np.allclose(iou_loop, iou_ours, atol=1e-9), "per-class loop disagrees"
    t_np, cm_np = best_time(lambda: numpy_bincount_confusion(pred_np, target_np, c), options.repeats)
    assert np.array_equal(cm_np, ours.numpy()), "NumPy bincount confusion matrix disagrees"
    rows.append(("NumPy per-class loop (reference 1)", t_loop, iou_loop.mean()))
    rows.append(("NumPy bincount per image (reference 2)", t_np, iou_of(cm_np).mean()))
    rows.append(("ours, torch.bincount, CPU", t_ours, iou_ours.mean()))
    if torch.cuda.is_available():
        pred_gpu, target_gpu = pred.cuda(), target.cuda()
        confusion_matrix(pred_gpu, target_gpu, c)  # warm-up
        t_gpu, ours_gpu = best_time(lambda: confusion_matrix(pred_gpu, target_gpu, c), options.repeats)
        assert torch.equal(ours_gpu.cpu(), ours), "GPU confusion matrix disagrees"
        rows.append((f"ours, torch.bincount, {torch.cuda.get_device_name()}", t_gpu, iou_ours.mean()))

    print("\n| method | seconds | mIoU (%) | ours (CPU) faster by |")
    print("|---|---:|---:|---:|")
    for name, seconds, miou in rows:
        print(f"| {name} | {seconds:.3f} | {miou:.4f} | {seconds / t_ours:.1f}x |")


if __name__ == "__main__":
    main()
