"""DKD vs fine-tuning without distillation on the synthetic 15-5 overlapped task, several seeds, one run.

Per seed: step 0 is trained once (it is the same for both methods: no old model yet), copied into two run folders,
then step 1 is trained with DKD (kd = dkd_pos = dkd_neg = 5) and with plain fine-tuning (kd = dkd_pos = dkd_neg = 0,
the forgetting baseline). Seeds run as parallel processes (one thread each). Prints the per-step table of every run
and the mean +- std over seeds of the final step, and writes them to `<out>/summary.md`.

    uv run python benchmarks/dkd/forgetting.py --out runs/bench_dkd --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dkd.steps import load_results, table_rows

COMMON = [
    "--task=15-5",
    "--setting=overlap",
    "--trainer.enable_model_summary=false",
]
METHODS = {"dkd": [], "finetune": ["--model.kd=0", "--model.dkd_pos=0", "--model.dkd_neg=0"]}


def _dkd(args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-m", "dkd", "train", *args], check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def run_seed(seed: int, out: Path, base_epochs: int, step_epochs: int, extra: list[str]) -> None:
    base = out / f"seed{seed}" / "base"
    seed_args = [f"--seed_everything={seed}", *COMMON, *extra]
    log = out / f"seed{seed}.log"
    if not (base / "step_0" / "results.json").exists():
        _dkd(["--step=0", f"--run_dir={base}", f"--trainer.max_epochs={base_epochs}", *seed_args], log)
    for method, flags in METHODS.items():
        run = out / f"seed{seed}" / method
        if not (run / "step_0").exists():
            shutil.copytree(base / "step_0", run / "step_0")
        if not (run / "step_1" / "results.json").exists():
            _dkd(["--step=1", f"--run_dir={run}", f"--trainer.max_epochs={step_epochs}", *seed_args, *flags], log)


def summarise(out: Path, seeds: list[int]) -> str:
    lines = []
    finals: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    for seed in seeds:
        for method in METHODS:
            results = load_results(out / f"seed{seed}" / method)
            lines.append(f"\n{method}, seed {seed}\n\n| step | classes | old | new | all | hIoU |\n|---|---|---|---|---|---|")
            lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
            final = results[-1]
            finals[method].append([final["old"], final["new"], final["all"], final["hiou"]])
    lines.append(f"\nFinal step (15-5 overlapped, step 1), mean +- std over seeds {seeds}\n")
    lines.append("| method | old | new | all | hIoU |\n|---|---|---|---|---|")
    for method, rows in finals.items():
        cells = []
        for column in zip(*rows):
            std = statistics.stdev(column) if len(column) > 1 else 0.0
            cells.append(f"{statistics.mean(column):.2f} +- {std:.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    base_old = [load_results(out / f"seed{s}" / "dkd")[0]["old"] for s in seeds]
    lines.append(f"\nstep 0 (classes 1-15) old mIoU per seed, before any new class: {[round(v, 2) for v in base_old]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_dkd"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--base_epochs", type=int, default=8)
    parser.add_argument("--step_epochs", type=int, default=4)
    parser.add_argument("extra", nargs="*", help="more arguments for every `dkd train` call (after --)")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with ThreadPoolExecutor(len(options.seeds)) as pool:
        jobs = [pool.submit(run_seed, s, options.out, options.base_epochs, options.step_epochs, options.extra)
                for s in options.seeds]
        for job in jobs:
            job.result()
    summary = summarise(options.out, options.seeds)
    summary += f"\nwall time {time.time() - start:.0f} s, {len(options.seeds)} seeds in parallel, load {os.getloadavg()}\n"
    (options.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
