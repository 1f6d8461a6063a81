"""DKD vs fine-tuning without distillation on the synthetic 15-5 overlapped task, several seeds, one run.

Per seed: step 0 is trained once (it is the same for both methods: no old model yet), copied into two run folders,
then step 1 is trained with DKD (kd = dkd_pos = dkd_neg = 5) and with plain fine-tuning (kd = dkd_pos = dkd_neg = 0,
the forgetting baseline), both with the packaged default's epochs unless --base_epochs / --step_epochs are given.
Seeds run as parallel processes (one thread each, at most --jobs seeds at a time, the two step-1 runs of a seed side
by side). Prints the per-step table of every run,
the mean +- std over seeds of the final step and the per-seed hIoU difference DKD - fine-tuning, and writes them to
`<out>/summary.md`.

    uv run python benchmarks/dkd/forgetting.py --out runs/bench_dkd --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cvlab_shared.steps import load_results, table_rows

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


def _epochs(epochs: int | None) -> list[str]:
    return [] if epochs is None else [f"--trainer.max_epochs={epochs}"]


def run_seed(seed: int, out: Path, base_epochs: int | None, step_epochs: int | None, extra: list[str]) -> None:
    base = out / f"seed{seed}" / "base"
    seed_args = [f"--seed_everything={seed}", *COMMON, *extra]
    log = out / f"seed{seed}.log"
    if not (base / "step_0" / "results.json").exists():
        _dkd(["--step=0", f"--run_dir={base}", *_epochs(base_epochs), *seed_args], log)

    def step_1(method: str) -> None:
        run = out / f"seed{seed}" / method
        if not (run / "step_0").exists():
            shutil.copytree(base / "step_0", run / "step_0")
        if not (run / "step_1" / "results.json").exists():
            _dkd(["--step=1", f"--run_dir={run}", *_epochs(step_epochs), *seed_args, *METHODS[method]],
                 out / f"seed{seed}_{method}.log")

    with ThreadPoolExecutor(len(METHODS)) as pool:  # both methods from the same step-0 model, side by side
        for job in [pool.submit(step_1, method) for method in METHODS]:
            job.result()


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
    gaps = [a[3] - b[3] for a, b in zip(finals["dkd"], finals["finetune"])]
    std = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    lines.append(f"\nhIoU DKD - fine-tuning per seed: {[round(g, 2) for g in gaps]}; mean {statistics.mean(gaps):.2f} "
                 f"+- {std:.2f} (std), {sum(g > 0 for g in gaps)}/{len(gaps)} seeds above 0")
    base_old = [load_results(out / f"seed{s}" / "dkd")[0]["old"] for s in seeds]
    lines.append(f"\nstep 0 (classes 1-15) old mIoU per seed, before any new class: {[round(v, 2) for v in base_old]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_dkd"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--base_epochs", type=int, help="step-0 epochs (default: the packaged default config's)")
    parser.add_argument("--step_epochs", type=int, help="step-1 epochs (default: the packaged default config's)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at the same time")
    parser.add_argument("extra", nargs="*", help="more arguments for every `dkd train` call (after --)")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with ThreadPoolExecutor(options.jobs) as pool:
        jobs = [pool.submit(run_seed, s, options.out, options.base_epochs, options.step_epochs, options.extra)
                for s in options.seeds]
        for job in jobs:
            job.result()
    summary = summarise(options.out, options.seeds)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_seed = (cpu.ru_utime + cpu.ru_stime) / len(options.seeds)
    summary += (f"\nwall time {time.time() - start:.0f} s, {len(options.seeds)} seeds, {options.jobs} at a time, "
                f"load {os.getloadavg()}; CPU time per seed (step 0 + both step-1 runs, one thread) {per_seed:.0f} s\n")
    (options.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
