"""OIM vs LOIM vs LOIM + ProtoNorm (OIMNet++) on the synthetic CUHK-SYSU-layout scenes, paired by seed.

Each (variant, seed) is one `oimnet-pp train` on the default CPU config, with the seed driving both the synthetic
scenes (`data.synthetic_seed`) and the training (`seed_everything`), so the three variants of a seed see the same
scenes and the same initial weights. Printed: mean +- sd of detection AP / recall and search mAP / top-1 per variant,
then each variant minus OIM per seed with a 95% t-interval of the mean difference; an interval that excludes 0 is
called outside seed noise.

    uv run --locked python benchmarks/oimnet_pp/ablation.py --seeds 0 1 2 --jobs 2

Finished runs are read back from `--out`, so runs split over several processes (disjoint seeds, the same `--out`)
are merged by a last call with all the seeds. `--variants` picks some; options after `--` go to every run.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

VARIANTS = {
    "OIM": ["--model.norm_type=none", "--model.loss_type=OIM"],
    "LOIM": ["--model.norm_type=none", "--model.loss_type=LOIM"],
    "LOIM+ProtoNorm": ["--model.norm_type=protonorm", "--model.loss_type=LOIM"],
}
METRICS = ("det_ap", "det_recall", "mAP", "top1", "chance_mAP")


def run(variant: str, seed: int, out: Path, extra: list[str]) -> dict[str, float]:
    folder = out / f"{variant}_seed{seed}"
    csv_path = folder / "runs/oimnet-pp/version_0/metrics.csv"
    if not csv_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-c",
            "from oimnet_pp.cli import main; main()",
            "train",
            f"--seed_everything={seed}",
            f"--data.synthetic_seed={seed}",
            *VARIANTS[variant],
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        with open(folder / "log.txt", "w") as log:
            subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
    rows = list(csv.DictReader(open(csv_path)))
    last = {}
    for row in rows:
        for m in METRICS:
            if row.get(f"test/{m}"):
                last[m] = float(row[f"test/{m}"])
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/oimnet_pp_ablation"))
    parser.add_argument("extra", nargs="*", help="more `oimnet-pp train` options, after --")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [v for v in VARIANTS if v in args.variants]
    jobs = [(v, s) for s in args.seeds for v in variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda job: run(*job, args.out.resolve(), args.extra), jobs)))
    extra = f" + {' '.join(args.extra)}" if args.extra else ""
    print(f"seeds {args.seeds}; default CPU config{extra}; metrics on the synthetic test split (TestG50)")
    print("| variant | " + " | ".join(METRICS) + " |")
    print("| --- |" + " --- |" * len(METRICS))
    for v in variants:
        cells = []
        for m in METRICS:
            x = np.array([results[(v, s)][m] for s in args.seeds])
            cells.append(f"{x.mean():.3f} +- {x.std(ddof=1) if len(x) > 1 else 0:.3f}")
        print(f"| {v} | " + " | ".join(cells) + " |")
    if "OIM" not in variants or len(variants) < 2:
        return
    print("\npaired differences vs OIM (mean, 95% t-interval over seeds):")
    print("| variant - OIM | " + " | ".join(METRICS) + " |")
    print("| --- |" + " --- |" * len(METRICS))
    for v in variants[1:]:
        cells = []
        for m in METRICS:
            d = np.array([results[(v, s)][m] - results[("OIM", s)][m] for s in args.seeds])
            if len(d) > 1 and d.std(ddof=1) > 0:
                half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                tag = " *" if abs(d.mean()) > half else ""
                cells.append(f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]{tag}")
            else:
                cells.append(f"{d.mean():+.3f}")
        print(f"| {v} | " + " | ".join(cells) + " |")
    print("* = the 95% interval excludes 0 (outside seed noise)")


if __name__ == "__main__":
    main()
