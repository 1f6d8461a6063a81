"""Rank correlation of AZ-NAS and baseline proxies with NAS-Bench-201 test accuracy, measured in one run.

    uv run python benchmarks/az_nas/nb201_correlation.py --cells 1000 --out runs/az_nas/nb201_1000.jsonl
    uv run python benchmarks/az_nas/nb201_correlation.py --cells all --device cuda --batch 64   # on a GPU

Cells: the first N of numpy RandomState(seed).permutation(15625) (benchmark index order). Every cell is scored on
its own seed (seed * 100000 + index), so a run can be resumed (lines already in --out are kept) and split.
Each dataset is scored as the paper does (`az_nas.benchmark.PROTOCOLS`): CIFAR-10 on the 10-class network at 32x32,
CIFAR-100 on the 100-class network at 32x32, ImageNet16-120 on the 120-class network at 16x16, each from the same
seed; its proxies are stored under the prefix "" / "c100_" / "in16_". `--datasets` picks which are scored.
Rankings (log-rank aggregation included) are computed inside the scored sample, per dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from az_nas.aggregate import aggregate
from az_nas.benchmark import DATASETS, PROTOCOLS, load_benchmark
from az_nas.proxies.baselines import ALL_PROXIES, score_proxies
from az_nas.spaces.nb201 import NB201Network, nb201_flops
from cvlab_shared.logging import progress
from cvlab_shared.metrics.rank_correlation import kendall_tau, spearman_rho

SINGLE = ("expressivity", "progressivity", "trainability", "complexity")
PREFIX = {"cifar10": "", "cifar100": "c100_", "ImageNet16-120": "in16_"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=None, help="nats_bench.csv (default: ../shared/data/nb201/)")
    parser.add_argument("--cells", default="1000", help="number of sampled cells, or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="cells scored together (AZ-NAS only; >1 for a GPU)")
    parser.add_argument("--proxies", default=",".join(ALL_PROXIES), help=f"comma list from {ALL_PROXIES}")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list from {DATASETS}: which "
                        "dataset protocols to score (classes, input size); the summary covers the scored ones")
    parser.add_argument("--out", default="runs/az_nas/nb201_correlation.jsonl")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the cells already in --out")
    parser.add_argument("--merge", default=None, help="JSONL of other proxies for the same cells (by index)")
    return parser.parse_args()


def sample_cells(n_total: int, cells: str, seed: int) -> list[int]:
    order = np.random.RandomState(seed).permutation(n_total)
    return [int(i) for i in (order if cells == "all" else order[: int(cells)])]


def read_done(path: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done.setdefault(record["index"], {}).update(record)
    return done


def dataset_done(record: dict | None, dataset: str, names: list[str]) -> bool:
    """Whether `record` already holds the proxies `names` scored under `dataset`'s protocol."""
    if record is None:
        return False
    keys = [PREFIX[dataset] + ("expressivity" if n == "az" else n) for n in names]
    return all(k in record for k in keys)


def score_one(arch: str, index: int, dataset: str, args: argparse.Namespace, names: list[str]) -> dict:
    """Proxies of one cell on `dataset`'s network and input size, keys prefixed by PREFIX[dataset]."""
    num_classes, resolution = PROTOCOLS[dataset]
    torch.manual_seed(args.seed * 100000 + index)
    net = NB201Network(arch, num_classes=num_classes).to(args.device)
    start = time.perf_counter()
    record = score_proxies(net, names, input_shape=(64, 3, resolution, resolution), numerics="both", device=args.device)
    record["seconds"] = time.perf_counter() - start
    return {PREFIX[dataset] + k: v for k, v in record.items()}


def score_batched(archs: list[str], indices: list[int], dataset: str, args: argparse.Namespace) -> list[dict]:
    from az_nas.search.batched import score_nb201_batch

    num_classes, resolution = PROTOCOLS[dataset]
    torch.manual_seed(args.seed * 100000 + indices[0])
    start = time.perf_counter()
    records = score_nb201_batch(
        archs, input_shape=(64, 3, resolution, resolution), num_classes=num_classes, device=args.device,
        numerics="both",
    )
    seconds = (time.perf_counter() - start) / len(archs)
    return [{PREFIX[dataset] + k: v for k, v in (record | {"seconds": seconds}).items()} for record in records]


def rankings_of(records: list[dict]) -> dict[str, np.ndarray]:
    """Every ranking available in `records` (unprefixed keys), by name."""
    columns = {key for record in records for key in record if isinstance(record[key], (int, float))}
    rankings: dict[str, np.ndarray] = {}
    if set(SINGLE) <= columns:
        rankings["AZ-NAS (stable numerics)"] = aggregate(records)
        official = [
            {**r, "expressivity": r["expressivity_official"], "progressivity": r["progressivity_official"]}
            for r in records
        ]
        rankings["AZ-NAS (official float32)"] = aggregate(official)
        rankings["AZ-NAS, linear rank sum"] = aggregate(records, mode="linear")
        for name in SINGLE:
            rankings[name] = np.array([r[name] for r in records])
        rankings["expressivity (official float32)"] = np.array([r["expressivity_official"] for r in records])
    for name in ("naswot", "synflow", "grad_norm", "snip", "zen", "params"):
        if name in columns:
            rankings[name] = np.array([r[name] for r in records])
    return rankings


def dataset_records(records: list[dict], dataset: str) -> list[dict]:
    """The records scored under `dataset`'s protocol, prefix stripped (with their index)."""
    prefix = PREFIX[dataset]
    out = []
    for r in records:
        own = {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
        if prefix == "":
            own = {k: v for k, v in own.items() if not any(k.startswith(p) for p in PREFIX.values() if p)}
        if "expressivity" in own or any(n in own for n in ("naswot", "synflow", "params")):
            out.append(own | {"index": r["index"]})
    return out


def correlations(records: list[dict], bench, datasets: list[str]) -> tuple[list[tuple[str, list[float]]], dict[str, int]]:
    """(ranking name, [tau, rho] per dataset, nan where not scored) and the number of cells per dataset."""
    per_dataset, counts = {}, {}
    for dataset in DATASETS:
        own = dataset_records(records, dataset) if dataset in datasets else []
        counts[dataset] = len(own)
        if len(own) > 1:
            truth = bench.accuracy[dataset][[r["index"] for r in own]]
            per_dataset[dataset] = {
                name: (kendall_tau(v, truth), spearman_rho(v, truth)) for name, v in rankings_of(own).items()
            }
    names = list(dict.fromkeys(n for table in per_dataset.values() for n in table))
    rows = []
    for name in names:
        cells = []
        for dataset in DATASETS:
            cells += list(per_dataset.get(dataset, {}).get(name, (math.nan, math.nan)))
        rows.append((name, cells))
    return rows, counts


def main() -> None:
    args = parse_args()
    if args.benchmark is None:
        from cvlab_shared.reference import reference_path

        args.benchmark = reference_path("data/nb201/nats_bench.csv")
    bench = load_benchmark(args.benchmark)
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    indices = sample_cells(len(bench), args.cells, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise SystemExit(f"unknown --datasets {unknown}; choose from {DATASETS}")
    todo = [(d, i) for d in datasets for i in indices if not dataset_done(done.get(i), d, names)]
    print(f"{len(indices)} cells x {len(datasets)} datasets, {len(todo)} (dataset, cell) pairs to score on "
          f"{args.device} ({out})", flush=True)
    start = time.perf_counter()
    if not args.summary_only and todo:
        with out.open("a") as handle:
            chunks = []
            for dataset in datasets:
                cells = [i for d, i in todo if d == dataset]
                chunks += [(dataset, cells[i : i + args.batch]) for i in range(0, len(cells), args.batch)]
            for dataset, chunk in progress(chunks, desc="scoring (chunks)"):
                archs = [bench.archs[i] for i in chunk]
                if args.batch > 1:
                    records = score_batched(archs, chunk, dataset, args)
                else:
                    records = [score_one(archs[0], chunk[0], dataset, args, names)]
                for index, arch, record in zip(chunk, archs, records):
                    record.update(index=index, arch=arch)
                    done.setdefault(index, {}).update(record)
                    handle.write(json.dumps(record) + "\n")
                handle.flush()
    elapsed = time.perf_counter() - start
    records = [done[i] for i in indices if i in done]
    if args.merge:
        extra = read_done(Path(args.merge))
        records = [{**extra[r["index"]], **r} for r in records if r["index"] in extra]
    print(f"\nscoring wall time this run {elapsed:.1f} s ({elapsed / max(len(todo), 1):.3f} s per cell and dataset); "
          f"device {args.device}, batch {args.batch}")
    rows, counts = correlations(records, bench, datasets)
    print("cells scored per dataset: " + ", ".join(f"{d} {n}" for d, n in counts.items()))
    for dataset in datasets:
        own = dataset_records(records, dataset)
        inf_e = sum(1 for r in own if math.isinf(r.get("expressivity_official", 0.0)))
        inf_t = sum(1 for r in own if math.isinf(r.get("trainability", 0.0)))
        print(f"{dataset}: -inf expressivity with official float32 numerics {inf_e}/{len(own)}; -inf trainability {inf_t}")
    print("\n| ranking | C10 tau | C10 rho | C100 tau | C100 rho | IN16 tau | IN16 rho |")
    print("|---|---|---|---|---|---|---|")
    for name, cells in rows:
        print(f"| {name} | " + " | ".join("-" if math.isnan(v) else f"{v:.3f}" for v in cells) + " |")
    for dataset in datasets:
        own = dataset_records(records, dataset)
        if own and set(SINGLE) <= set(own[0]):
            r = own[int(np.argmax(aggregate(own)))]
            accs = " / ".join(f"{bench.accuracy[d][r['index']]:.2f}" for d in DATASETS)
            num_classes, resolution = PROTOCOLS[dataset]
            flops = nb201_flops(bench.archs[r["index"]], resolution=resolution, num_classes=num_classes) / 1e6
            print(f"AZ-NAS pick on {dataset}: index {r['index']} {bench.archs[r['index']]} -> test acc {accs} "
                  f"(C10 / C100 / IN16), {flops:.2f} MFLOPs at {resolution}x{resolution}, {num_classes} classes")
    summary = out.with_suffix(".summary.json")
    summary.write_text(json.dumps({"n": counts, "rows": rows, "args": vars(args) | {"benchmark": str(args.benchmark)}}, indent=1))
    print(f"summary written to {summary}")


if __name__ == "__main__":
    main()
