"""CaCL ablation on the synthetic source -> target pair: source-only vs CaCL vs its even-split schedule vs no
curriculum vs no CD loss (and, on request, neither curriculum nor CD loss).

For each seed the source-only model is trained once (`cacl train` with max_epochs = source_epochs, the default
config otherwise); the adaptation variants (four by default, `--variants`) start from its last checkpoint
(`--model.source_checkpoint`, `--model.source_epochs=0`, max_epochs - source_epochs adaptation epochs), so they
share the same source model and differ only in the adaptation. A finished source-only run found in --out is
reused. Every number is target test mAP / rank-1 of the last epoch, measured in this run; a paired comparison by
seed follows the table.

    uv run python benchmarks/cacl/ablation.py --seeds 3 4 5 6 7 --jobs 2 --out /tmp/cacl_ablation
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cvlab_shared.data.synthetic_reid import write_synthetic_reid

VARIANTS = {
    "CaCL (curriculum + CD loss)": [],
    "CaCL, adaptation epochs split evenly over the stages": ["--model.stage_epochs=null"],
    "no curriculum (all cameras, CD loss)": ["--model.curriculum=false"],
    "no CD loss (curriculum, plain cluster CE)": ["--model.cd_loss=false"],
    "neither (all cameras, plain cluster CE)": ["--model.curriculum=false", "--model.cd_loss=false"],
}
SHORT = dict(zip(["cacl", "even", "no-curriculum", "no-cd", "neither"], VARIANTS))
DEFAULT_VARIANTS = ["cacl", "even", "no-curriculum", "no-cd"]


def run(cwd: Path, args: list[str]) -> dict[str, float]:
    """`cacl train ARGS` in `cwd` (one thread), returning the test metrics of its metrics.csv."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    cmd = [sys.executable, "-c", "from cacl.cli import main; main()", "train", *args]
    with open(cwd / "log.txt", "w") as log:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return read_metrics(cwd)


def read_metrics(cwd: Path) -> dict[str, float]:
    """The last test metrics of the newest run in `cwd`, and the last epoch's cluster statistics (cluster/*)."""
    rows = list(csv.DictReader(open(sorted(cwd.glob("runs/cacl/version_*/metrics.csv"))[-1])))
    test = [r for r in rows if r.get("test/mAP")][-1]
    out = {k: float(v) for k, v in test.items() if k.startswith("test/") and v}
    clustered = [r for r in rows if r.get("cluster/ari")]
    if clustered:
        out |= {k: float(v) for k, v in clustered[-1].items() if k.startswith("cluster/") and v}
    return out


def write_unequal_target(root: Path, opts: argparse.Namespace) -> list[str]:
    """Write the default synthetic target (the data module's settings: seed 2, 48 identities, 6 cameras, 4 images per
    camera, 64x32) with unequal camera sizes, once; return the `cacl train` options that read it."""
    sizes = opts.target_camera_sizes
    settings = dict(
        layout="market", num_train_ids=48, num_test_ids=48, num_cams=len(sizes), images_per_cam=4,
        image_size=(64, 32), camera_shift=opts.synthetic_shift, camera_bias=opts.synthetic_bias, num_distractors=4,
        num_junk=2, seed=2, camera_sizes=sizes,
    )
    meta_file = root / "Market-1501-v15.09.15" / "synthetic_meta.json"
    if not meta_file.is_file():
        meta = write_synthetic_reid(root, **settings)
    else:
        meta = json.loads(meta_file.read_text())
    print(f"target cameras (least to most shifted) {meta['camera_shift_order']}, training images per camera "
          f"{meta['train_images_per_camera']}", flush=True)
    return ["--data.target=market1501", f"--data.synthetic_cams={len(sizes)}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/cacl_ablation"))
    parser.add_argument("--source_epochs", type=int, default=8)
    parser.add_argument("--max_epochs", type=int, default=20)
    parser.add_argument("--synthetic_shift", type=float, default=1.0, help="graded target camera shift (data)")
    parser.add_argument("--synthetic_bias", type=float, default=0.3, help="per-camera style offset (data)")
    parser.add_argument(
        "--target_camera_sizes", type=float, nargs="+", default=None,
        help="relative size of each target camera (unequal cameras, as in MSMT17): the benchmark writes the target "
        "itself with these sizes and the data module reads it as Market-1501",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=list(SHORT), default=DEFAULT_VARIANTS, help="adaptations to run"
    )
    parser.add_argument(
        "--extra", action="append", default=[], help="a `cacl train` option for every run, e.g. --extra=--data.iters=40"
    )
    opts = parser.parse_args()
    opts.out = opts.out.resolve()  # every run works in its own sub-folder
    data = opts.out / "data"
    common = [
        f"--data.source_root={data / 'source'}",
        f"--data.target_root={data / 'target'}",
        *(write_unequal_target(data / "target", opts) if opts.target_camera_sizes else []),
        f"--model.source_epochs={opts.source_epochs}",
        f"--data.synthetic_shift={opts.synthetic_shift}",
        f"--data.synthetic_bias={opts.synthetic_bias}",
        *opts.extra,
    ]
    start = time.perf_counter()

    # the synthetic pair is written once, by a first source-only run, before anything runs in parallel
    def source_only(seed: int) -> tuple[int, dict]:
        done = sorted((opts.out / f"source_s{seed}").glob("runs/cacl/version_*/metrics.csv"))
        if done and (done[-1].parent / "checkpoints/last.ckpt").is_file():
            return seed, read_metrics(opts.out / f"source_s{seed}")
        return seed, run(
            opts.out / f"source_s{seed}",
            [*common, f"--seed_everything={seed}", f"--data.seed={seed}", f"--trainer.max_epochs={opts.source_epochs}"],
        )

    results: dict[str, dict[int, dict]] = {"source-only": {}}
    first, *rest = opts.seeds
    results["source-only"].update([source_only(first)])
    with ThreadPoolExecutor(opts.jobs) as pool:
        results["source-only"].update(pool.map(source_only, rest))

        def adapt(job: tuple[str, int]) -> tuple[str, int, dict]:
            name, seed = job
            ckpt = opts.out / f"source_s{seed}" / "runs/cacl/version_0/checkpoints/last.ckpt"
            folder = opts.out / f"{list(VARIANTS).index(name)}_s{seed}"
            args = [
                *common,
                f"--seed_everything={seed}",
                f"--data.seed={seed}",
                "--model.source_epochs=0",
                f"--model.source_checkpoint={ckpt}",
                f"--trainer.max_epochs={opts.max_epochs - opts.source_epochs}",
                *VARIANTS[name],
            ]
            return name, seed, run(folder, args)

        jobs = [(SHORT[v], s) for s in opts.seeds for v in opts.variants]
        for name, seed, metrics in pool.map(adapt, jobs):
            results.setdefault(name, {})[seed] = metrics
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\nsynthetic source -> target (camera shift {opts.synthetic_shift}, bias {opts.synthetic_bias}), "
        f"target test split, seeds {opts.seeds} ({minutes:.1f} min, {opts.jobs} jobs)"
    )
    print("| method | mAP per seed | mAP mean ± sd | rank-1 mean |")
    print("|---|---|---|---|")
    for name, per_seed in results.items():
        maps = [per_seed[s]["test/mAP"] for s in opts.seeds]
        r1 = [per_seed[s]["test/rank1"] for s in opts.seeds]
        sd = statistics.stdev(maps) if len(maps) > 1 else 0.0
        print(
            f"| {name} | {' / '.join(f'{m:.3f}' for m in maps)} | {statistics.mean(maps):.3f} ± {sd:.3f} | "
            f"{statistics.mean(r1):.3f} |"
        )
    if "cacl" not in opts.variants:
        return
    cacl = [results[SHORT["cacl"]][s]["test/mAP"] for s in opts.seeds]
    print("\nCaCL against each other row, paired by seed (same source model, same data):")
    for name, per_seed in results.items():
        if name == SHORT["cacl"]:
            continue
        diff = [c - per_seed[s]["test/mAP"] for c, s in zip(cacl, opts.seeds)]
        wins = sum(d > 0 for d in diff)
        print(f"- vs {name}: mAP {statistics.mean(diff):+.3f} on average, higher on {wins}/{len(diff)} seeds")


if __name__ == "__main__":
    main()
