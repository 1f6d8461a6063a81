"""Cost of the AZ-NAS proxies against one plain forward+backward pass of the same network on the same batch.

    uv run python benchmarks/az_nas/cost.py --cells 12                       # CPU ratio
    uv run python benchmarks/az_nas/cost.py --device cuda --cells 200 --full # + time to score all of NB201

Per cell: best of --repeats timings (process CPU time on the CPU, wall time on a GPU) of (a) forward + backward of sum(logits) and (b) `score_network` (all four
proxies, FLOPs included), interleaved so load changes hit both. The ratio is the median over cells.
With --full (GPU), all 15,625 cells are scored with the batched scorer and compared with the one-at-a-time time
per cell (measured on the sample) times 15,625.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from az_nas.proxies.az import score_network
from az_nas.search.batched import score_nb201_batch
from az_nas.search.random_search import sample_archs
from az_nas.spaces.nb201 import NB201Network, all_archs, format_arch
from cvlab_shared.logging import progress


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Wall seconds on a GPU; CPU seconds of this process on the CPU (robust to other jobs sharing the cores)."""
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64, help="cells per pass of the batched scorer (--full)")
    parser.add_argument("--full", action="store_true", help="score all 15,625 cells with the batched scorer")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32, device=args.device)
    plain, proxy, ratios = [], [], []
    for arch in progress(sample_archs(args.cells, 0), desc="timing cells"):
        net = NB201Network(arch).to(args.device).train()

        def forward_backward() -> None:
            net.zero_grad()
            net(x).sum().backward()

        def az() -> None:
            score_network(net, inputs=x)

        forward_backward(), az()  # warm-up
        a, b = [], []
        for _ in range(args.repeats):
            a.append(timed(forward_backward, args.device))
            b.append(timed(az, args.device))
        plain.append(min(a))
        proxy.append(min(b))
        ratios.append(min(b) / min(a))
    print(f"\n{args.cells} NB201 cells, batch 64x3x32x32, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| what | median per cell | ")
    print("|---|---|")
    print(f"| plain forward+backward | {statistics.median(plain) * 1e3:.1f} ms |")
    print(f"| AZ-NAS proxies (E, P, T, C) | {statistics.median(proxy) * 1e3:.1f} ms |")
    print(f"| ratio AZ-NAS / plain (median over cells) | {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}) |")
    if args.full:
        archs = [format_arch(a) for a in all_archs()]
        chunks = [archs[i : i + args.batch] for i in range(0, len(archs), args.batch)]
        start = time.perf_counter()
        n_inf = 0
        for chunk in progress(chunks, desc="scoring all of NB201"):
            records = score_nb201_batch(chunk, device=args.device)
            n_inf += sum(1 for r in records if not np.isfinite(r["expressivity"]))
        sync(args.device)
        total = time.perf_counter() - start
        one_by_one = statistics.median(proxy) * len(archs)
        print(f"| all 15,625 cells, batched ({args.batch} per pass) | {total:.1f} s |")
        print(f"| all 15,625 cells one at a time (median x 15,625) | {one_by_one:.1f} s |")
        print(f"| speed-up of batching | {one_by_one / total:.1f}x |  (non-finite expressivity: {n_inf})")


if __name__ == "__main__":
    main()
