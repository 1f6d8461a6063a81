"""Cost of the class-wise Cayley rotations: one batched solve over all classes vs a Python loop over classes
(one inverse per class, as the official `get_matrix(k)`), forward + backward, and the memory update of the whole
memory, at the paper's sizes (D = 256 features, VOC 15-1 step 5: 20 classes; ADE 100-10 step 5: 141 classes).

    uv run --locked python benchmarks/alife/rotation_cost.py
"""

from __future__ import annotations

import argparse
import time

import torch

from alife import CayleyRotation, FeatureMemory


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[20, 141])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--per_class", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, D = {options.dim}\n")
    print("| classes | batched solve fwd+bwd (s) | loop fwd+bwd (s) | loop / batched | max abs diff | "
          "memory update batched (s) | memory update loop (s) | loop / batched |")
    print("|---|---|---|---|---|---|---|---|")
    for classes in options.classes:
        rotation = CayleyRotation(classes, options.dim)

        def step(build):
            rotation.zero_grad()
            build().sum().backward()

        batched = best_of(lambda: step(rotation.matrices), options.repeat)
        looped = best_of(lambda: step(rotation.matrices_loop), options.repeat)
        with torch.no_grad():
            diff = (rotation.matrices() - rotation.matrices_loop()).abs().max().item()
            memory = FeatureMemory(torch.randn(classes, options.per_class, options.dim))
            matrices = rotation.matrices()
            update = best_of(lambda: memory.rotated(matrices), options.repeat)
            update_loop = best_of(
                lambda: torch.stack([m @ r.t() for m, r in zip(memory.features, matrices)]), options.repeat)
        print(f"| {classes} | {batched:.3f} | {looped:.3f} | {looped / batched:.2f}x | {diff:.1e} | {update:.3f} | "
              f"{update_loop:.3f} | {update_loop / update:.2f}x |")


if __name__ == "__main__":
    main()
