"""`az-nas search`: random search on NAS-Bench-201 or in an AutoFormer ViT space, or evolution in the MobileNetV2
space, scored by AZ-NAS."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from az_nas.search.result import SearchResult
from az_nas.spaces.mobilenetv2 import BUDGETS

AUTOFORMER = ("autoformer-tiny", "autoformer-small", "autoformer-base")


def parse_budget(text: str) -> tuple[float, int]:
    """'450M' / '600M' / '1G' (the paper's budgets with their layer caps) or any FLOPs number such as 8e8 or 800M."""
    if text in BUDGETS:
        return BUDGETS[text]
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:].upper(), 1.0)
    try:
        value = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise SystemExit(f"bad --budget {text!r}: use {', '.join(BUDGETS)} or a number such as 8e8 or 800M") from None
    return value, 16


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="az-nas search",
        description="Training-free architecture search with AZ-NAS. With no arguments: 20 random NB201 cells on the "
        "CPU, printing the chosen cell and how long the search took. Results go to runs/az-nas/search (the "
        "runs/<command>/ folder of every package).",
    )
    parser.add_argument("--space", choices=("nb201", "mobilenetv2", "mobilenetv2-stages", *AUTOFORMER), default="nb201",
                        help="autoformer-*: random ViTs inside the parameter window (Tiny 4-6 M, Small 21-23 M, "
                        "Base 52-54 M); mobilenetv2: the official space; mobilenetv2-stages: our simpler genome")
    parser.add_argument("--num-candidates", default="20",
                        help="NB201: cells to sample ('all' = 15,625); AutoFormer: ViTs to sample; MobileNetV2: "
                        "children scored by evolution")
    parser.add_argument("--budget", default="450M", help=f"MobileNetV2 FLOPs budget: {', '.join(BUDGETS)} or a number")
    parser.add_argument("--max-layers", type=int, default=None, help="MobileNetV2 layer cap (default per budget)")
    parser.add_argument("--population", type=int, default=64, help="MobileNetV2 evolution population")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch", type=int, default=None,
                        help="candidates scored per pass (default 1 on CPU, 64 on CUDA for NB201, 8 for evolution; "
                        "AutoFormer scores one at a time)")
    parser.add_argument("--batch-size", type=int, default=64, help="random input batch of the proxies")
    parser.add_argument("--resolution", type=int, default=None,
                        help="input size (default NB201: --dataset's, 32 or 16 for ImageNet16-120; 224 MobileNetV2 and "
                        "AutoFormer, a multiple of 16 there)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier size (default NB201: --dataset's, 10 / 100 / 120; 1000 otherwise)")
    parser.add_argument("--numerics", choices=("stable", "official"), default="stable",
                        help="eigenvalue computation: stable float64 (default) or the reference float32")
    parser.add_argument("--benchmark", default=None,
                        help="NB201 ground truth (nats_bench.csv or a NATS-Bench file): report Kendall tau / "
                        "Spearman rho and plot rank vs accuracy")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100", "ImageNet16-120"),
                        help="NB201: the dataset whose protocol scores the cells (classes, input size, as the paper) "
                        "and whose benchmark accuracy the report and plot use")
    parser.add_argument("--out", default="runs/az-nas/search", help="folder for results.json/.csv and the plot")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def search_main(args: Sequence[str] | None = None) -> SearchResult:
    opts = build_parser().parse_args(args)
    start = time.perf_counter()
    if opts.space == "nb201":
        from az_nas.benchmark import PROTOCOLS
        from az_nas.search.random_search import random_search

        n = None if opts.num_candidates == "all" else int(opts.num_candidates)
        batch = opts.batch or (64 if opts.device.startswith("cuda") else 1)
        num_classes, resolution = PROTOCOLS[opts.dataset]
        result = random_search(
            n, seed=opts.seed, batch=batch, batch_size=opts.batch_size, resolution=opts.resolution or resolution,
            num_classes=opts.num_classes or num_classes, device=opts.device, numerics=opts.numerics,
            show_progress=not opts.no_progress,
        )
    elif opts.space in AUTOFORMER:
        from az_nas.search.autoformer_search import autoformer_search

        result = autoformer_search(
            opts.space.removeprefix("autoformer-"), int(opts.num_candidates), seed=opts.seed,
            batch_size=opts.batch_size, resolution=opts.resolution or 224, num_classes=opts.num_classes or 1000,
            device=opts.device, numerics=opts.numerics, show_progress=not opts.no_progress,
        )
    else:
        from az_nas.search.evolution import evolution_search

        budget, layers = parse_budget(opts.budget)
        result = evolution_search(
            budget, opts.max_layers or layers, iterations=int(opts.num_candidates), population=opts.population,
            batch=opts.batch or 8, seed=opts.seed, batch_size=opts.batch_size, resolution=opts.resolution or 224,
            num_classes=opts.num_classes or 1000, device=opts.device, numerics=opts.numerics, space=opts.space,
            show_progress=not opts.no_progress,
        )
    elapsed = time.perf_counter() - start
    result.extra["seconds"] = elapsed
    if not result.candidates:
        raise SystemExit("no candidate satisfied the constraints; raise --budget or --max-layers")
    if opts.benchmark:
        _report_benchmark(result, opts)
    paths = result.save(opts.out)
    best = result.best
    print(f"scored {len(result.candidates)} candidates in {elapsed:.1f} s ({opts.device})")
    print("proxies of the chosen one: " + json.dumps({k: round(v, 4) for k, v in result.scores[best].items()}))
    print(f"results: {paths['json']} and {paths['csv']}")
    print(f"chosen: {result.candidates[best]}")
    return result


def _report_benchmark(result: SearchResult, opts: argparse.Namespace) -> None:
    if result.space != "nb201":
        raise SystemExit("--benchmark applies to the NB201 space only")
    from az_nas.benchmark import DATASETS, load_benchmark
    from az_nas.plots import plot_rank_vs_accuracy
    from cvlab_shared.metrics.rank_correlation import rank_correlations

    bench = load_benchmark(opts.benchmark)
    rows = [bench.lookup(c) for c in result.candidates]
    az = result.az
    report = {}
    dataset = opts.dataset  # the cells were scored under this dataset's protocol only
    report[dataset] = rank_correlations(az, bench.accuracy[dataset][rows]) if len(rows) > 1 else {}
    if report[dataset]:
        print(f"{dataset}: Kendall tau {report[dataset]['kendall_tau']:.3f}, "
              f"Spearman rho {report[dataset]['spearman_rho']:.3f} (n={len(rows)})")
    best = rows[result.best]
    report["chosen_accuracy"] = {d: float(bench.accuracy[d][best]) for d in DATASETS}
    report["best_in_sample"] = {d: float(np.max(bench.accuracy[d][rows])) for d in DATASETS}
    print("chosen cell's test accuracy: " + ", ".join(f"{d} {v:.2f}" for d, v in report["chosen_accuracy"].items()))
    plot = Path(opts.out) / "rank_vs_accuracy.png"
    plot_rank_vs_accuracy(az, bench.accuracy[opts.dataset][rows], plot, title=f"AZ-NAS on NB201 ({opts.dataset})")
    print(f"plot: {plot}")
    result.extra["benchmark"] = report
