"""Training-step cost of MRL and M-NDCG relative to mixup on the same batch, measured in one run.

Every method runs the same two forward passes (raw batch, then M mixed copies; `rankmixup.forward.mixup_forward`)
on the same batch with the same mixup draw, then its loss, backward and an SGD step. Methods are interleaved
round-robin and each ratio is a ratio of medians, so machine load affects numerator and denominator alike.

Rows:
- loss only: the loss forward + backward on fixed logits (no network), the part that differs between methods;
- step vs mixup+raw CE: the whole step against mixup whose raw pass is also trained (RegMixup form, the same
  network graph as MRL/M-NDCG) - the cost the ranking losses add;
- step vs plain mixup: against mixup that only trains on the mixed copies (no backward through the raw pass).

    uv run python benchmarks/rankmixup/step_cost.py [--backbone resnet50_cifar --batch 32 --repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from cvlab_shared.models.classification import build_model
from rankmixup import MixupLoss, MNDCGLoss, MRLLoss
from rankmixup.forward import mixup_forward


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_step(model, loss, x, y, num_classes, num_mixup, layer_mix, seed) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        gen = torch.Generator().manual_seed(seed)
        logits, mixed, batch = mixup_forward(model, x, y, num_classes, num_mixup, 2.0, layer_mix, gen)
        opt.zero_grad(set_to_none=True)
        loss(logits, mixed, y, batch.soft_targets).loss.backward()
        opt.step()

    return step


def make_loss_only(loss, logits, mixed, y, soft) -> Callable[[], None]:
    def step() -> None:
        a, b = logits.detach().requires_grad_(), mixed.detach().requires_grad_()
        loss(a, b, y, soft).loss.backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50_cifar")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loss-repeats", type=int, default=200)
    parser.add_argument("--layer-mix", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    num_classes = 10
    model = build_model(args.backbone, num_classes=num_classes).train()
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, num_classes, (args.batch,))
    print(f"backbone {args.backbone}, batch {args.batch}x3x{args.size}x{args.size}, layer_mix {args.layer_mix}, "
          f"{torch.get_num_threads()} threads, repeats {args.repeats} (median)")
    rows = []
    for name, copies, loss in [("MRL", 1, MRLLoss(num_classes)), ("M-NDCG", 3, MNDCGLoss(num_classes))]:
        refs = {"mixup+raw CE": MixupLoss(num_classes, raw_weight=1.0), "plain mixup": MixupLoss(num_classes)}
        steps = {key: make_step(model, fn, x, y, num_classes, copies, args.layer_mix, 0)
                 for key, fn in [(name, loss), *refs.items()]}
        for fn in steps.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {key: [] for key in steps}
        for _ in range(args.repeats):
            for key, fn in steps.items():
                times[key].append(timed(fn))
        med = {key: statistics.median(v) for key, v in times.items()}
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            logits, mixed, batch = mixup_forward(model, x, y, num_classes, copies, 2.0, args.layer_mix, gen)
        loss_steps = {key: make_loss_only(fn, logits, mixed, y, batch.soft_targets)
                      for key, fn in [(name, loss), ("plain mixup", refs["plain mixup"])]}
        loss_times: dict[str, list[float]] = {key: [] for key in loss_steps}
        for _ in range(args.loss_repeats):
            for key, fn in loss_steps.items():
                loss_times[key].append(timed(fn))
        loss_med = {key: statistics.median(v) for key, v in loss_times.items()}
        rows.append((name, copies, med[name], med["mixup+raw CE"], med["plain mixup"], loss_med[name],
                     loss_med["plain mixup"]))
    print("| loss | M | step (ms) | mixup+raw CE step (ms) | plain mixup step (ms) | step / mixup+raw CE | "
          "step / plain mixup | loss-only (us) | mixup loss-only (us) | loss-only ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, copies, step, ref, plain, lo, lo_ref in rows:
        print(f"| {name} | {copies} | {step * 1e3:.1f} | {ref * 1e3:.1f} | {plain * 1e3:.1f} | {step / ref:.3f} | "
              f"{step / plain:.3f} | {lo * 1e6:.0f} | {lo_ref * 1e6:.0f} | {lo / lo_ref:.2f} |")


if __name__ == "__main__":
    main()
