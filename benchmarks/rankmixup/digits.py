"""CE vs mixup vs MRL vs M-NDCG (and ACLS when the acls package is installed) on noisy digits, several seeds.

Every run uses the packaged default (`rankmixup/configs/default.yaml`: small CNN, digits + N(0, 0.5) noise, SGD,
30 epochs) and changes only the model's loss arguments. Two phases:

1. selection (seed 0 only): a small grid of MRL (alpha, margin) and M-NDCG (alpha, num_mixup) settings, ranked by
   the ECE on the validation split (held out of the training set); the test split is not looked at;
2. evaluation: every method, the paper defaults and the selected settings, over `--seeds`; test ACC / ECE / AECE /
   NLL before and after temperature scaling (fitted on the validation split), mean +- std.

The model of the last epoch is evaluated (no checkpoint selection). CE is the reference measured in the same run.

    uv run python benchmarks/rankmixup/digits.py [--seeds 0 1 2] [--epochs 30] [--out digits_results.json]
    uv run python benchmarks/rankmixup/digits.py --only CE ACLS      # no selection; ACLS needs acls installed
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources
from typing import Any

import lightning.pytorch as pl
import torch
import yaml

from cvlab_shared.data.classification_datamodule import ClassificationDataModule
from rankmixup.module import RankMixupClassifier

PAPER = {
    "CE": {"loss": "ce"},
    "Mixup": {"loss": "mixup", "num_mixup": 1},
    "MRL (paper: w 0.1, m 2)": {"loss": "mrl", "alpha": 0.1, "margin": 2.0, "num_mixup": 1},
    "M-NDCG (paper: w 0.1, M 3)": {"loss": "mndcg", "alpha": 0.1, "num_mixup": 3},
}
GRID = {
    **{f"MRL w {w}, m {m}": {"loss": "mrl", "alpha": w, "margin": m, "num_mixup": 1}
       for w, m in ((0.5, 2.0), (1.0, 4.0), (2.0, 2.0), (2.0, 4.0))},
    **{f"M-NDCG w {w}, M {k}": {"loss": "mndcg", "alpha": w, "num_mixup": k} for w in (0.5, 2.0) for k in (1, 3)},
}


def default_config() -> dict[str, Any]:
    return yaml.safe_load((resources.files("rankmixup") / "configs" / "default.yaml").read_text())


def run(model_args: dict[str, Any], seed: int, epochs: int, acls: bool = False) -> dict[str, float]:
    """Train one model from the default config with `model_args`; validation and test metrics."""
    config = default_config()
    pl.seed_everything(seed, verbose=False)
    data = ClassificationDataModule(**{**config["data"], "shuffle_seed": seed})
    base = {k: v for k, v in config["model"].items() if k not in ("loss", "margin", "alpha", "mixup_alpha", "num_mixup")}
    if acls:
        from acls.module import ACLSClassifier  # optional: only when acls is installed beside rankmixup

        model = ACLSClassifier(**base, **model_args)
    else:
        model = RankMixupClassifier(**{**config["model"], **model_args, "mixup_seed": seed})
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=config["trainer"]["gradient_clip_val"])
    trainer.fit(model, datamodule=data)
    val_ece = float(trainer.callback_metrics["val/ece"])
    trainer.test(model, datamodule=data, verbose=False)
    res = model.test_results
    return {"val_ece": val_ece, **{f"test_{k}": v for k, v in res["test"].items()},
            **{f"ts_{k}": v for k, v in res["test_ts"].items()}, "temperature": res["temperature"]}


def acls_available() -> bool:
    try:
        from acls.module import ACLSClassifier  # noqa: F401
    except ImportError:
        return False
    return True


def fmt(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.2f} +- {std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=None, help="also write all results as JSON here")
    parser.add_argument("--only", nargs="+", default=None,
                        help="skip the selection and run only the methods whose names start with these (e.g. CE ACLS)")
    args = parser.parse_args()
    start = time.time()
    torch.set_num_threads(1)
    selection: dict[str, float] = {}
    methods: dict[str, dict[str, Any]] = dict(PAPER)
    if args.only is None:
        for name, model_args in GRID.items():
            selection[name] = run(model_args, seed=0, epochs=args.epochs)["val_ece"]
            print(f"[{time.time() - start:5.0f}s] selection {name}: val ECE {100 * selection[name]:.2f}", flush=True)
        best_mrl = min((k for k in GRID if k.startswith("MRL")), key=selection.get)
        best_ndcg = min((k for k in GRID if k.startswith("M-NDCG")), key=selection.get)
        methods.update({f"{best_mrl} (val-selected)": GRID[best_mrl], f"{best_ndcg} (val-selected)": GRID[best_ndcg]})
    if acls_available():
        methods["ACLS (acls package defaults)"] = {"acls": True}
    if args.only is not None:
        methods = {k: v for k, v in methods.items() if k.startswith(tuple(args.only))}
    results: dict[str, list[dict[str, float]]] = {}
    for name, model_args in methods.items():
        is_acls = model_args.get("acls", False)
        margs = {} if is_acls else model_args
        results[name] = [run(margs, seed, args.epochs, acls=is_acls) for seed in args.seeds]
        print(f"[{time.time() - start:5.0f}s] {name}: test ECE {fmt([r['test_ece'] for r in results[name]])}", flush=True)
    print(f"\nnoisy digits (N(0, 0.5)), small CNN, {args.epochs} epochs, seeds {args.seeds}, mean +- std in % (NLL raw); "
          f"{time.time() - start:.0f}s")
    print("| method | ACC | ECE | AECE | CECE | NLL | ECE after TS | AECE after TS | NLL after TS | val ECE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in results.items():
        col = lambda key, scale=100.0: fmt([r[key] for r in rows], scale)  # noqa: E731
        print(f"| {name} | {col('test_acc')} | {col('test_ece')} | {col('test_aece')} | {col('test_cece')} | "
              f"{col('test_nll', 1.0)} | {col('ts_ece')} | {col('ts_aece')} | {col('ts_nll', 1.0)} | {col('val_ece')} |")
    if selection:
        print("\nselection grid (seed 0, validation ECE %): " + ", ".join(f"{k}: {100 * v:.2f}" for k, v in selection.items()))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"selection": selection, "results": results, "seeds": args.seeds, "epochs": args.epochs},
                      handle, indent=1)


if __name__ == "__main__":
    main()
