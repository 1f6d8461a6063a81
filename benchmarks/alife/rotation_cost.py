"""Cost of the class-wise Cayley rotations: one batched solve over all classes vs a Python loop over classes, at the
paper's sizes (D = 256 features; 16 classes: VOC 15-5 step 1; 20: VOC 15-1 last step; 141: ADE 100-10 last step;
memories of 50 and 500 samples per class).

- rotation training step: forward + backward of R_k x_k for the K class representatives (what `train_rotations`
  does per batch). Batched: `CayleyRotation.forward`, R x = 2 (I + A)^{-1} x - x in one batched LU solve, no matrix
  formed. Loops: the official form (per class build R_k = (I - A_k)(I + A_k)^{-1} with one inverse, then multiply,
  `forward_loop`) and the same solve as ours but one class at a time (what batching alone buys).
- matrices: forward + backward of all R_k, one batched inverse (R = 2 (I + A)^{-1} - I) vs one inverse and one
  product per class (`matrices_loop`).
- memory update: the whole (K, M, D) memory rotated in one batched call (`FeatureMemory.rotated(rotation)`: the
  solve when M <= D, else all R_k from one batched solve and one bmm) vs per class R_k then one product.

    uv run --locked python benchmarks/alife/rotation_cost.py    # on an otherwise idle machine
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from alife import CayleyRotation, FeatureMemory  # noqa: E402


def best_of(variants: dict[str, object], repeat: int) -> dict[str, float]:
    """The fastest of `repeat` runs of each variant, interleaved (a load change hits every variant alike)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def solve_loop(rotation: CayleyRotation, x: torch.Tensor) -> torch.Tensor:
    """Our maths (R x = 2 (I + A)^{-1} x - x), one class at a time."""
    eye = torch.eye(rotation.dim)
    return torch.stack([2 * torch.linalg.solve(eye + a, v) - v for a, v in zip(rotation.skew(), x)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[16, 20, 141])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--per_class", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--repeat", type=int, default=7)
    options = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), D = {options.dim}, best of {options.repeat}"
          " (seconds)\n")
    print("| classes | step: batched solve | step: loop, official R_k | ratio | step: loop, same solve | ratio | "
          "R: batched inverse | R: loop | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    memory_rows = []
    for classes in options.classes:
        rotation = CayleyRotation(classes, options.dim)
        with torch.no_grad():  # a trained-looking rotation, not the near-identity init
            rotation.theta.normal_(0, 0.05)
        vectors = torch.randn(classes, options.dim)

        def step(build):
            rotation.zero_grad()
            build().square().sum().backward()

        t = best_of({"ours": lambda: step(lambda: rotation(vectors)),
                     "official": lambda: step(lambda: rotation.forward_loop(vectors)),
                     "same": lambda: step(lambda: solve_loop(rotation, vectors)),
                     "batched_r": lambda: step(rotation.matrices),
                     "loop_r": lambda: step(rotation.matrices_loop)}, options.repeat)
        ours, official, same, batched_r, loop_r = (t[k] for k in ("ours", "official", "same", "batched_r", "loop_r"))
        with torch.no_grad():
            diff = max((rotation.matrices() - rotation.matrices_loop()).abs().max().item(),
                       (rotation(vectors) - rotation.forward_loop(vectors)).abs().max().item())
        print(f"| {classes} | {ours:.4f} | {official:.4f} | {official / ours:.1f}x | {same:.4f} | {same / ours:.2f}x | "
              f"{batched_r:.4f} | {loop_r:.4f} | {loop_r / batched_r:.1f}x | {diff:.1e} |", flush=True)
        for per_class in options.per_class:
            memory = FeatureMemory(torch.randn(classes, per_class, options.dim))
            with torch.no_grad():
                t = best_of({"ours": lambda: memory.rotated(rotation),
                             "loop": lambda: rotation.forward_loop(memory.features)}, options.repeat)
                update, update_loop = t["ours"], t["loop"]
                diff = (memory.rotated(rotation).features - rotation.forward_loop(memory.features)).abs().max().item()
            memory_rows.append(f"| {classes} | {per_class} | {update:.4f} | {update_loop:.4f} | "
                               f"{update_loop / update:.1f}x | {diff:.1e} |")
    print("\n| classes | samples per class | memory update: batched | loop, official R_k | ratio | max abs diff |")
    print("|---|---|---|---|---|---|")
    print("\n".join(memory_rows))


if __name__ == "__main__":
    main()
