"""STMN vs the same network without memories (and each memory alone) on the synthetic MARS-layout video set with
planted distractors (fixed-position bars per camera, occluded first frames, blur bursts), paired by seed.

Every variant of a seed starts from the same trunk and last-stage weights (same `seed_everything`; the heads are
drawn after the memories, so their initialisation differs between variants), on the same data, with the same
identity batches and RRS frame choices (random erasing draws differ); only the memories differ. Each run is the default `stmn train` recipe (tiny CNN,
8 ids x 4 tracklets x 6 frames, Adam) at the frame size and length given here, then the RRS and all-frames test.
Results are appended to `--out` (JSON lines) as they finish, so an interrupted run keeps its finished seeds.

Usage:
    uv run --locked python benchmarks/stmn/ablation.py --seeds 0 1 2 3 4 5 6 7 8 9  # the README table
    uv run --locked python benchmarks/stmn/ablation.py --summary                     # table from --out only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from stmn.data import StmnDataModule
from stmn.module import StmnModule

VARIANTS = {
    "stmn": dict(spatial_memory=True, temporal_memory=True),
    "no memory": dict(spatial_memory=False, temporal_memory=False),
    "spatial only": dict(spatial_memory=True, temporal_memory=False),
    "temporal only": dict(spatial_memory=False, temporal_memory=True),
}
HERE = Path(__file__).parent


def run(variant: str, seed: int, args) -> dict:
    pl.seed_everything(seed, verbose=False)
    data = StmnDataModule(
        image_size=tuple(args.size),
        iters=args.iters,
        synthetic_train_ids=32,
        synthetic_test_ids=args.test_ids,
        synthetic_seed=args.data_seed,
        seed=seed,
    )
    model = StmnModule(backbone="tiny", width=16, lr=1e-3, weight_decay=1e-5, lr_step=args.lr_step, **VARIANTS[variant])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    start = time.process_time()
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    if args.save_net and variant == "stmn" and seed == args.seeds[0]:
        torch.save({"state_dict": model.net.state_dict(), "num_classes": data.num_classes, "size": args.size},
                   args.save_net)
    return {"variant": variant, "seed": seed, "settings": settings(args), "cpu_s": time.process_time() - start, **{
        f"{p}_{k}": v for p, m in model.results.items() for k, v in m.items()}}


def settings(args) -> dict:
    """What makes two rows comparable: rows of other settings in the same --out file are left out of the table."""
    return {"epochs": args.epochs, "iters": args.iters, "lr_step": args.lr_step, "size": list(args.size),
            "data_seed": args.data_seed, "test_ids": args.test_ids}


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of paired differences."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, float("nan"), float("nan")
    # two-sided 95% t quantiles for small n (df = n - 1)
    q = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}.get(n - 1, 1.96)
    half = q * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def summary(rows: list[dict]) -> str:
    by = {(r["variant"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if all((v, r["seed"]) in by for v in VARIANTS)})
    lines = [f"seeds with every variant finished: {seeds}", "",
             "| variant | RRS rank-1 | RRS mAP | all-frames rank-1 | all-frames mAP | mAP - no memory (all frames), "
             "mean [95% CI] |", "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        if not seeds:
            break
        mean = {k: statistics.fmean(100 * by[(v, s)][k] for s in seeds)
                for k in ("rrs_rank1", "rrs_mAP", "all_rank1", "all_mAP")}
        diff = "-"
        if v != "no memory":
            m, lo, hi = t_interval([100 * (by[(v, s)]["all_mAP"] - by[("no memory", s)]["all_mAP"]) for s in seeds])
            diff = f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        lines.append(f"| {v} | {mean['rrs_rank1']:.1f} | {mean['rrs_mAP']:.1f} | {mean['all_rank1']:.1f} | "
                     f"{mean['all_mAP']:.1f} | {diff} |")
    lines += ["", "per seed, all-frames mAP (%):", "| seed | " + " | ".join(VARIANTS) + " |",
              "|---|" + "---|" * len(VARIANTS)]
    for s in seeds:
        lines.append(f"| {s} | " + " | ".join(f"{100 * by[(v, s)]['all_mAP']:.1f}" for v in VARIANTS) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--lr-step", type=int, default=20)
    p.add_argument("--size", type=int, nargs=2, default=[32, 16])
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--test-ids", type=int, default=64, help="synthetic test identities (more = less test noise)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "ablation_runs.jsonl"))
    p.add_argument("--save-net", default="", help="save the first seed's STMN network here (for where_memories_look)")
    p.add_argument("--summary", action="store_true", help="only print the table of the runs in --out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.summary:
        for seed in args.seeds:
            for variant in args.variants:
                row = run(variant, seed, args)
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.is_file() else []
    rows = [r for r in rows if r.get("settings") == settings(args)]
    print(summary(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
