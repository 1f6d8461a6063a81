"""Rank correlation of AZ-NAS and baseline proxies with NAS-Bench-201 test accuracy, measured in one run.

    uv run python benchmarks/az_nas/nb201_correlation.py --cells 1000 --out runs/az_nas/nb201_1000.jsonl
    uv run python benchmarks/az_nas/nb201_correlation.py --cells all --device cuda --batch 64   # on a GPU

Cells: the first N of numpy RandomState(seed).permutation(15625) (benchmark index order). Every cell is scored on
its own seed (seed * 100000 + index), so a run can be resumed (lines already in --out are kept) and split.
Proxies are computed on the CIFAR-10 network (32x32 inputs, 10 classes) for all three datasets, unless
--in16-resolution is given (then AZ-NAS is also scored at that resolution with 120 classes for ImageNet16-120).
Rankings (log-rank aggregation included) are computed inside the scored sample.
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
from az_nas.benchmark import DATASETS, load_benchmark
from az_nas.proxies.baselines import ALL_PROXIES, score_proxies
from az_nas.spaces.nb201 import NB201Network, nb201_flops
from cvlab_shared.logging import progress
from cvlab_shared.metrics.rank_correlation import kendall_tau, spearman_rho

SINGLE = ("expressivity", "progressivity", "trainability", "complexity")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=None, help="nats_bench.csv (default: ../shared/data/nb201/)")
    parser.add_argument("--cells", default="1000", help="number of sampled cells, or 'all'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="cells scored together (AZ-NAS only; >1 for a GPU)")
    parser.add_argument("--proxies", default=",".join(ALL_PROXIES), help=f"comma list from {ALL_PROXIES}")
    parser.add_argument("--in16-resolution", type=int, default=0, help="also score AZ-NAS at this size for IN16")
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
                done[record["index"]] = record
    return done


def score_one(arch: str, index: int, args: argparse.Namespace, names: list[str]) -> dict:
    seed = args.seed * 100000 + index
    torch.manual_seed(seed)
    net = NB201Network(arch).to(args.device)
    start = time.perf_counter()
    record = score_proxies(net, names, numerics="both", device=args.device)
    record["seconds"] = time.perf_counter() - start
    if args.in16_resolution:
        torch.manual_seed(seed)
        net16 = NB201Network(arch, num_classes=120).to(args.device)
        shape = (64, 3, args.in16_resolution, args.in16_resolution)
        in16 = score_proxies(net16, ["az"], input_shape=shape, numerics="stable", device=args.device)
        record.update({f"in16_{k}": v for k, v in in16.items()})
    return record


def score_batched(archs: list[str], indices: list[int], args: argparse.Namespace) -> list[dict]:
    from az_nas.search.batched import score_nb201_batch

    torch.manual_seed(args.seed * 100000 + indices[0])
    start = time.perf_counter()
    records = score_nb201_batch(archs, device=args.device, numerics="both")
    seconds = (time.perf_counter() - start) / len(archs)
    for record in records:
        record["seconds"] = seconds
    return records


def correlations(records: list[dict], truth: dict[str, np.ndarray], in16: bool) -> list[tuple[str, list[float]]]:
    """(ranking name, [tau, rho] per dataset) for every ranking available in the records."""
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
    rows = []
    for name, values in rankings.items():
        cells = []
        for dataset in DATASETS:
            scores = values
            if dataset == "ImageNet16-120" and in16 and name.startswith("AZ-NAS (stable"):
                in16_records = [{k[5:]: v for k, v in r.items() if k.startswith("in16_")} for r in records]
                scores = aggregate(in16_records)
            cells += [kendall_tau(scores, truth[dataset]), spearman_rho(scores, truth[dataset])]
        rows.append((name, cells))
    return rows


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
    todo = [i for i in indices if i not in done]
    print(f"{len(indices)} cells, {len(done)} already in {out}, {len(todo)} to score on {args.device}", flush=True)
    start = time.perf_counter()
    if not args.summary_only and todo:
        with out.open("a") as handle:
            chunks = [todo[i : i + args.batch] for i in range(0, len(todo), args.batch)]
            for chunk in progress(chunks, desc="scoring (chunks)"):
                archs = [bench.archs[i] for i in chunk]
                if args.batch > 1:
                    records = score_batched(archs, chunk, args)
                else:
                    records = [score_one(archs[0], chunk[0], args, names)]
                for index, arch, record in zip(chunk, archs, records):
                    record.update(index=index, arch=arch)
                    done[index] = record
                    handle.write(json.dumps(record) + "\n")
                handle.flush()
    elapsed = time.perf_counter() - start
    records = [done[i] for i in indices if i in done]
    if args.merge:
        extra = read_done(Path(args.merge))
        records = [{**extra[r["index"]], **r} for r in records if r["index"] in extra]
    truth = {d: bench.accuracy[d][[r["index"] for r in records]] for d in DATASETS}
    print(f"\nn = {len(records)} cells; scoring wall time this run {elapsed:.1f} s "
          f"({elapsed / max(len(todo), 1):.3f} s per cell); device {args.device}, batch {args.batch}")
    inf_e = sum(1 for r in records if math.isinf(r.get("expressivity_official", 0.0)))
    inf_t = sum(1 for r in records if math.isinf(r.get("trainability", 0.0)))
    print(f"-inf expressivity with official float32 numerics: {inf_e}/{len(records)}; -inf trainability: {inf_t}")
    print("\n| ranking | C10 tau | C10 rho | C100 tau | C100 rho | IN16 tau | IN16 rho |")
    print("|---|---|---|---|---|---|---|")
    rows = correlations(records, truth, bool(args.in16_resolution))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    best = int(np.argmax(aggregate(records))) if set(SINGLE) <= set(records[0]) else None
    if best is not None:
        r = records[best]
        accs = " / ".join(f"{bench.accuracy[d][r['index']]:.2f}" for d in DATASETS)
        print(f"\nAZ-NAS pick: index {r['index']} {r['arch']} -> test acc {accs} (C10 / C100 / IN16)")
        print(f"check: FLOPs of the pick {nb201_flops(r['arch']) / 1e6:.2f} M")
    summary = out.with_suffix(".summary.json")
    summary.write_text(json.dumps({"n": len(records), "rows": rows, "args": vars(args) | {"benchmark": str(args.benchmark)}}, indent=1))
    print(f"summary written to {summary}")


if __name__ == "__main__":
    main()
