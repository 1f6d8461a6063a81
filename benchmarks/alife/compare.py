"""Fine-tuning vs ALIFE vs ALIFE-M (and DKD when cvlab-dkd is installed) on the synthetic 15-5 overlapped task.

Every method runs `alife train` (or `dkd train`) with its packaged default config for each seed; fine-tuning, ALIFE
and ALIFE-M of one seed share one base model (step 0), and ALIFE-M takes ALIFE's finished step-1 ALI stage (the same
stage with the same inputs and seed) before its memory, rotation and replay stages. Prints per method the final-step old / new / all mIoU and
hIoU (mean and standard deviation over seeds), the bytes of its replay memory, and the paired differences with a
95 % t-interval over seeds ("outside seed noise" when the interval excludes 0).

    uv run --locked python benchmarks/alife/compare.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from alife.cli import main as alife_main  # noqa: E402

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
QUICK = ["--model.epochs=[2,1]", "--model.memory_per_class=10", "--model.rotation_epochs=1",
         "--trainer.limit_test_batches=4"]


def run(command, args: list[str], quiet: bool) -> None:
    started = time.perf_counter()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        command(args)
    print(f"  {' '.join(args[:6])} ... done in {time.perf_counter() - started:.0f} s", flush=True)


def last_step(folder: Path) -> dict:
    results = sorted(folder.glob("step_*/results.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    return json.loads(results[-1].read_text())


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired(a: list[float], b: list[float]) -> str:
    diff = [x - y for x, y in zip(a, b)]
    mean = statistics.mean(diff)
    if len(diff) < 2:
        return f"{mean:+.2f} (one seed: no interval)"
    half = T95.get(len(diff) - 1, 1.96) * statistics.stdev(diff) / math.sqrt(len(diff))
    verdict = "outside seed noise" if abs(mean) > half else "within seed noise"
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] {verdict}"


def share_ali_step(alife: Path, alife_m: Path) -> None:
    """ALIFE-M's first stage at step 1 is ALIFE's ALI step with the same base, config and seed (the same numbers on
    the CPU): copy the finished stage instead of training it again (the memory, rotation and replay stages run)."""
    source, target = alife / "step_1" / "step1", alife_m / "step_1" / "step1"
    if (source / "done.json").exists() and not target.exists():
        shutil.copytree(source, target)
        print(f"  ALIFE-M step 1 ALI stage taken from {source}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_alife"))
    parser.add_argument("--quick", action="store_true", help="2 + 1 epochs, 10 memory samples per class (CI smoke)")
    parser.add_argument("--no-dkd", action="store_true", help="leave DKD out even when cvlab-dkd is installed")
    parser.add_argument("--verbose", action="store_true", help="show every run's output")
    options = parser.parse_args()
    extra = QUICK if options.quick else []
    methods = {"fine-tuning": ["--finetune"], "ALIFE": [], "ALIFE-M": ["--memory"]}
    with_dkd = not options.no_dkd and importlib.util.find_spec("dkd") is not None
    rows: dict[str, list[dict]] = {name: [] for name in [*methods, *(["DKD"] if with_dkd else [])]}
    for seed in options.seeds:
        print(f"seed {seed}", flush=True)
        folder = options.out / f"seed_{seed}"
        common = [f"--seed_everything={seed}", *extra]
        run(alife_main, ["train", "--run_dir", str(folder / "ALIFE"), *common], not options.verbose)
        for name, flags in methods.items():
            if name == "ALIFE-M":
                share_ali_step(folder / "ALIFE", folder / name)
            if name != "ALIFE":
                run(alife_main, ["train", *flags, "--run_dir", str(folder / name), "--base_from", str(folder / "ALIFE"),
                                 *common], not options.verbose)
            rows[name].append(last_step(folder / name))
        if with_dkd:
            from dkd.cli import main as dkd_main

            dkd_extra = ["--trainer.max_epochs=2", "--trainer.limit_test_batches=4"] if options.quick else []
            run(dkd_main, ["train", "--run_dir", str(folder / "DKD"), f"--seed_everything={seed}", *dkd_extra],
                not options.verbose)
            rows["DKD"].append({**last_step(folder / "DKD"), "memory_bytes": 0})
    seeds = ", ".join(map(str, options.seeds))
    print(f"\nsynthetic VOC 15-5 overlapped, final step (classes 16-20), seeds {seeds}; mean ± std over seeds, %\n")
    print("| method | old | new | all | hIoU | replay memory (bytes) | image memory of as many samples (bytes) |")
    print("|---|---|---|---|---|---|---|")
    for name, results in rows.items():
        cells = [summary([r[k] for r in results]) for k in ("old", "new", "all", "hiou")]
        memory = results[0].get("memory_bytes")
        image = results[0].get("image_memory_bytes")
        print(f"| {name} | {' | '.join(cells)} | {memory if memory is not None else 0} | {image or '-'} |")
    print("\npaired differences over seeds (mean [95 % t-interval])\n")
    print("| comparison | old | new | hIoU |")
    print("|---|---|---|---|")
    pairs = [("ALIFE", "fine-tuning"), ("ALIFE-M", "ALIFE"), *([("ALIFE", "DKD")] if with_dkd else [])]
    for a, b in pairs:
        cells = [paired([r[k] for r in rows[a]], [r[k] for r in rows[b]]) for k in ("old", "new", "hiou")]
        print(f"| {a} - {b} | {' | '.join(cells)} |")
    timing = [json.loads(p.read_text()) for p in options.out.glob("seed_*/ALIFE-M/step_*/memory_info.json")]
    if timing:
        per_class = statistics.mean(t["extract_seconds_per_class"] for t in timing)
        rotation = statistics.mean(t["rotation_seconds_per_class"] for t in timing)
        print(f"\nALIFE-M cost (mean over seeds): memory extraction {per_class:.2f} s per class, rotation training "
              f"{rotation:.2f} s per class")


if __name__ == "__main__":
    main()
