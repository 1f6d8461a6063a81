"""CE vs LS vs FL vs MbLS vs ACLS on noisy digits (3 seeds) and the cost of each loss relative to CE.

Run from the repository root:  uv run python benchmarks/acls/compare_losses.py
Everything is measured in this run; the cost table compares each loss with CE on the same step, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from acls import build_loss
from acls.module import ACLSClassifier
from cvlab_shared.data.classification_datamodule import ClassificationDataModule
from cvlab_shared.models.classification import build_model

# name -> (loss name, keyword arguments); the default recipe of `acls train` with only the loss changed
METHODS = {
    "CE": ("ce", {}),
    "LS (alpha 0.05)": ("ls", {"alpha": 0.05}),
    "FL (gamma 3)": ("focal", {"gamma": 3.0}),
    "MbLS (m 7, alpha 0.1)": ("mbls", {"margin": 7.0, "alpha": 0.1}),
    "ACLS (m 7)": ("acls", {"margin": 7.0}),
}


def train_once(loss_name: str, kwargs: dict, seed: int, epochs: int) -> dict[str, float]:
    """One `acls train`-equivalent run on noisy digits; returns the test metrics of the best-val-acc checkpoint."""
    pl.seed_everything(seed, verbose=False)
    data = ClassificationDataModule("digits", noise=0.5, val_fraction=0.2, batch_size=64)
    model = ACLSClassifier(num_classes=10, backbone="small_cnn", in_channels=1, lr=0.05, milestones=[20],
                           loss=build_loss(loss_name, 10, **kwargs), cpu_threads=1)
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, gradient_clip_val=2.0, logger=False,
                             default_root_dir=folder, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[ModelCheckpoint(dirpath=folder, monitor="val/acc", mode="max")])
        trainer.fit(model, datamodule=data)
        trainer.test(model, datamodule=data, ckpt_path="best", verbose=False, weights_only=False)
    results = model.test_results
    return {**results["test"], **{f"ts_{k}": v for k, v in results["test_ts"].items()}}


def loss_cost(repeats: int, batch: int) -> dict[str, tuple[float, float]]:
    """Median seconds of one forward+backward step, (whole ResNet-50 step, loss alone on 200-class logits)."""
    torch.manual_seed(0)
    model = build_model("resnet50_cifar", 200)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 200, (batch,))
    logits_alone = torch.randn(256, 200) * 5
    targets_alone = torch.randint(0, 200, (256,))
    losses = {name: build_loss(spec[0], 200, **spec[1]) for name, spec in METHODS.items()}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in losses}
    for _ in range(repeats):
        for name, loss_fn in losses.items():  # interleaved, so load changes hit every loss alike
            start = time.perf_counter()
            loss_fn(model(x), y).backward()
            times[name][0].append(time.perf_counter() - start)
            z = logits_alone.clone().requires_grad_(True)
            start = time.perf_counter()
            for _ in range(20):
                loss_fn(z, targets_alone).backward()
            times[name][1].append((time.perf_counter() - start) / 20)
            model.zero_grad(set_to_none=True)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--cost-repeats", type=int, default=5)
    parser.add_argument("--cost-batch", type=int, default=16)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    rows: dict[str, list[dict[str, float]]] = {}
    for name in args.methods:
        loss_name, kwargs = METHODS[name]
        rows[name] = []
        for seed in args.seeds:
            start = time.perf_counter()
            rows[name].append(train_once(loss_name, kwargs, seed, args.epochs))
            r = rows[name][-1]
            print(f"{name} seed {seed}: acc {100 * r['acc']:.2f} ece {100 * r['ece']:.2f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)

    def cell(values: list[float], scale: float = 100.0) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{scale * statistics.mean(values):6.2f} ± {scale * spread:4.2f}"

    metrics = ["acc", "ece", "aece", "nll", "ts_ece", "ts_aece"]
    print(f"\nnoisy digits (std 0.5), small CNN, {args.epochs} epochs, seeds {args.seeds}: mean ± std, % (NLL as is)")
    print("| method | " + " | ".join(m.upper().replace("TS_", "TS ") for m in metrics) + " |")
    print("|" + " --- |" * (len(metrics) + 1))
    for name, runs in rows.items():
        cells = [cell([r[m] for r in runs], 1.0 if m == "nll" else 100.0) for m in metrics]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if "CE" in rows and "ACLS (m 7)" in rows:
        ce_ece = statistics.mean(r["ece"] for r in rows["CE"])
        acls_ece = statistics.mean(r["ece"] for r in rows["ACLS (m 7)"])
        gap = 100 * (statistics.mean(r["acc"] for r in rows["ACLS (m 7)"]) - statistics.mean(r["acc"] for r in rows["CE"]))
        print(f"\nACLS ECE / CE ECE = {acls_ece / ce_ece:.2f} (target <= 0.5); ACLS - CE accuracy = {gap:+.2f} points "
              f"(target within 1)")

    if args.cost_repeats:
        cost = loss_cost(args.cost_repeats, args.cost_batch)
        base_step, base_loss = cost["CE"]
        print(f"\ncost relative to CE (median of {args.cost_repeats}, interleaved, 1 thread)")
        print("| loss | ResNet-50 step, batch " + str(args.cost_batch) + " | loss alone, 256 x 200 logits |")
        print("| --- | --- | --- |")
        for name, (step, alone) in cost.items():
            print(f"| {name} | {step / base_step:.3f}x ({1000 * step:.0f} ms) | {alone / base_loss:.2f}x "
                  f"({1e6 * alone:.0f} us) |")


if __name__ == "__main__":
    main()
