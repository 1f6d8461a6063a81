"""Source-only vs BPCL vs each contrast direction alone vs the release's loss, on the synthetic SYNTHIA -> Cityscapes
pair, paired by seed. Prints per-seed target mIoU16 and the mean paired difference with a 95 % t interval.

Per seed (the seed of the synthetic data and of training): the source-only stage is trained once and copied into
every variant's run folder, so all variants start from the same model and the same round-0 pseudo labels; then each
variant runs the self-training rounds:

* self-training: static pseudo labels only (both contrast weights 0, no dynamic labels): the base of the method;
* BPCL (paper conventions, the package default): both directions, memory prototypes, calibration, hybrid labels;
* t2s only / s2t only: one contrast direction (the other weight 0), otherwise as BPCL;
* release loss: the release's conventions (per-pair batch prototypes, ASPP-branch features, entropy on
  probabilities, static labels only, no calibration).

    uv run --locked python benchmarks/bpcl_uda/variants.py --seeds 0 1 2 3 4 --out runs/bench_bpcl
    uv run --locked python benchmarks/bpcl_uda/variants.py --seeds 0 --tiny      # CI smoke: 1 round, few images

Seeds may be split over several jobs sharing one --out (each seed has its own folder); `--summarise` with all the
seeds then prints the whole table without training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "self-training": [
        "--model.lambda_t2s=0",
        "--model.lambda_s2t=0",
        "--model.dynamic_labels=false",
        "--model.calibration=false",
    ],
    "BPCL": [],
    "t2s only": ["--model.lambda_s2t=0"],
    "s2t only": ["--model.lambda_t2s=0"],
    "release loss": [
        "--model.release_contrast=true",
        "--model.release_entropy=true",
        "--model.contrast_feature=branches",
        "--model.dynamic_labels=false",
        "--model.calibration=false",
    ],
}
TINY = [
    "--data.synthetic_source=16",
    "--data.synthetic_target=16",
    "--data.synthetic_val=8",
    "--trainer.max_epochs=1",
    "--model.source_only_epochs=2",
    "--trainer.log_every_n_steps=1",
]
# t quantiles (two-sided 95 %) by degrees of freedom
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def run(args: list[str], log: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    with open(log, "a") as f:
        subprocess.run(
            [sys.executable, "-m", "bpcl_uda", "train", *args], check=True, stdout=f, stderr=subprocess.STDOUT, env=env
        )


def run_seed(seed: int, out: Path, rounds: int, extra: list[str]) -> None:
    seed_args = [f"--seed_everything={seed}", f"--data.synthetic_seed={seed}", f"--rounds={rounds}", *extra]
    log = out / f"seed{seed}.log"
    base = out / f"seed{seed}" / "base"
    if not (base / "source_only" / "results.json").exists():
        run([f"--run_dir={base}", "--rounds=0", *seed_args[:2], *extra], log)
    for name, flags in VARIANTS.items():
        folder = out / f"seed{seed}" / name.replace(" ", "_")
        if not (folder / "source_only").exists():
            shutil.copytree(base / "source_only", folder / "source_only")
        run([f"--run_dir={folder}", *seed_args, *flags], log)


def interval(values: list[float]) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:+.2f} (one seed, no interval)"
    half = T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def summarise(out: Path, seeds: list[int], rounds: int, key: str = "mIoU16") -> str:
    def score(seed: int, name: str, stage: str) -> float:
        return json.loads((out / f"seed{seed}" / name.replace(" ", "_") / stage / "results.json").read_text())[key]

    last = f"round_{rounds - 1}"
    table = {"source-only": [score(s, "BPCL", "source_only") for s in seeds]}
    table.update({name: [score(s, name, last) for s in seeds] for name in VARIANTS})
    lines = [
        f"Target val {key} (%) after {rounds} round(s), per seed {seeds}\n",
        "| variant | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | vs source-only, 95 % CI | vs self-training, 95 % CI |",
        "|---|" + "---:|" * (len(seeds) + 3),
    ]
    for name, values in table.items():
        vs_source = interval([v - b for v, b in zip(values, table["source-only"], strict=True)])
        vs_self = interval([v - b for v, b in zip(values, table["self-training"], strict=True)])
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {name} | {cells} | {statistics.mean(values):.2f} | {vs_source} | {vs_self} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_bpcl"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a few images, 1 round: a smoke run for CI")
    parser.add_argument(
        "--summarise", action="store_true", help="train nothing: the table of the finished runs in --out"
    )
    parser.add_argument("extra", nargs="*", help="more arguments for every `bpcl-uda train` call (after --)")
    o = parser.parse_args()
    rounds = 1 if o.tiny else o.rounds
    extra = [*(TINY if o.tiny else []), *o.extra]
    o.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for seed in [] if o.summarise else o.seeds:
        run_seed(seed, o.out, rounds, extra)
    summary = summarise(o.out, o.seeds, rounds)
    if not o.summarise:
        summary += f"\nwall time {time.time() - start:.0f} s, load average {os.getloadavg()}\n"
    (o.out / f"summary_seeds{'-'.join(map(str, o.seeds))}.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
