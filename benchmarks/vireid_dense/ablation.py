"""Baseline vs LbA (and each CMAlign loss alone) on the synthetic SYSU-MM01, paired by seed.

Every variant trains the package's default run (`vireid-dense train`: tiny two-stream CNN, 64x32 images, 16
epochs) with the same seed for the sampler, the initial weights and CMAlign's partners, and is tested on the
all-search and indoor-search protocols (10 random gallery trials each). For each variant the table gives the mean
over seeds and the mean paired difference to the baseline with a 95% t interval.

    uv run --locked python benchmarks/vireid_dense/ablation.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


from vireid_dense.cli import _run

VARIANTS = {
    "baseline": ["--model.method=baseline"],
    "+IC only": ["--model.method=full", "--model.lw_dt=0"],
    "+DT only": ["--model.method=full", "--model.lw_ic=0"],
    "full (IC + DT)": ["--model.method=full"],
    "full, legacy DT": ["--model.method=full", "--model.dt_semantics=legacy"],
}
METRICS = ("all_rank1", "all_mAP", "all_mINP", "indoor_rank1", "indoor_mAP")
T95 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def run(variant: str, seed: int, workdir: Path) -> dict[str, float]:
    args = ["train", f"--seed_everything={seed}", f"--model.seed={seed}", f"--data.seed={seed}",
            "--trainer.logger=false", *VARIANTS[variant]]
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        return dict(_run(args).model.results)
    finally:
        os.chdir(cwd)


def interval(diffs: list[float]) -> str:
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{100 * mean:+6.2f}"
    half = T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{100 * mean:+6.2f} [{100 * (mean - half):+6.2f}, {100 * (mean + half):+6.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=None, help="JSON file of every run's metrics")
    parser.add_argument("--load", type=Path, nargs="+", default=None,
                        help="print the table of earlier --out files (merged) instead of training")
    args = parser.parse_args()
    results: dict[str, dict[int, dict[str, float]]] = {v: {} for v in args.variants}
    start = time.time()
    if args.load:
        for path in args.load:
            for variant, runs in json.loads(path.read_text()).items():
                results.setdefault(variant, {}).update({int(s): r for s, r in runs.items()})
        args.variants = [v for v in VARIANTS if results.get(v)]
        args.seeds = sorted(set.intersection(*(set(results[v]) for v in args.variants)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:  # interleaved by seed: a slower machine later in the run hits every variant
                for variant in args.variants:
                    results[variant][seed] = run(variant, seed, Path(tmp))
                    print(f"seed {seed} {variant:16s} "
                          + " ".join(f"{m}={results[variant][seed][m]:.4f}" for m in METRICS), file=sys.stderr,
                          flush=True)
                    if args.out:  # after every run, so an interrupted benchmark keeps what it measured
                        args.out.write_text(json.dumps(results, indent=1))
    took = "loaded from " + ", ".join(str(p) for p in args.load) if args.load else f"{time.time() - start:.0f} s"
    print(f"\nsynthetic SYSU-MM01, seeds {args.seeds}, {took}; values in %, "
          "difference to the baseline paired by seed with a 95% t interval")
    header = f"| variant | {' | '.join(METRICS)} | all mAP - baseline | all rank-1 - baseline |"
    print(header)
    print("|" + "---|" * (len(METRICS) + 3))
    for variant in args.variants:
        means = [100 * statistics.fmean(results[variant][s][m] for s in args.seeds) for m in METRICS]
        row = f"| {variant} | " + " | ".join(f"{x:.2f}" for x in means)
        if variant == "baseline" or "baseline" not in results:
            row += " | - | - |"
        else:
            for m in ("all_mAP", "all_rank1"):
                row += " | " + interval([results[variant][s][m] - results["baseline"][s][m] for s in args.seeds])
            row += " |"
        print(row)


if __name__ == "__main__":
    main()
