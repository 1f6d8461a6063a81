"""Cost of one BPCL adaptation step relative to one source-only step on the same source batch (CPU, same model).

    uv run --locked python benchmarks/bpcl_uda/step_cost.py [--backbone resnet18] [--size 64 128] [--batch 4]

The adaptation step forwards a source and a target batch of the same size, updates the prototype memory, transfers
labels and computes both contrast directions; the source-only step forwards the source batch alone. Prints the
median of `--repeats` timed steps (after one warm-up) and their ratio, for the paper and the release conventions.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from bpcl_uda.module import BPCLModule

RELEASE = {
    "release_contrast": True,
    "release_entropy": True,
    "contrast_feature": "branches",
    "dynamic_labels": False,
    "calibration": False,
}


def timed_steps(module: BPCLModule, batch, repeats: int) -> float:
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 128))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    o = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*self.log.*")
    torch.manual_seed(0)
    height, width = o.size
    image_s, image_t = torch.randn(o.batch, 3, height, width), torch.randn(o.batch, 3, height, width)
    label_s = torch.randint(0, 19, (o.batch, height, width))
    label_t = torch.where(torch.rand(o.batch, height, width) < 0.3, torch.randint(0, 19, (o.batch, height, width)), 255)
    source_only = BPCLModule("source_only", backbone=o.backbone, freeze_bn=False).train()
    base = timed_steps(source_only, (image_s, label_s), o.repeats)
    rows = [("source-only", base)]
    for name, options in (("BPCL, paper conventions", {}), ("BPCL, release conventions", RELEASE)):
        module = BPCLModule("adapt", backbone=o.backbone, freeze_bn=False, **options).train()
        module.net.load_state_dict(source_only.net.state_dict())
        rows.append(
            (name, timed_steps(module, {"source": (image_s, label_s), "target": (image_t, label_t)}, o.repeats))
        )
    print(
        f"{o.backbone}, batch {o.batch} + {o.batch} at {height} x {width}, CPU threads {torch.get_num_threads()}, "
        f"median of {o.repeats} steps\n"
    )
    print("| step | seconds | ratio to source-only |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
