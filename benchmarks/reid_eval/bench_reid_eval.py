"""Re-ID evaluation and re-ranking: cvlab_shared against a straightforward NumPy reference, same inputs, same run.

The reference is the textbook torchreid-style evaluation: full distance matrix, full argsort, a Python loop per
query (same-id-same-camera removal, CMC, non-interpolated AP, INP), and Zhong et al.'s re-ranking as a dense loop
over every sample. Each implementation runs in its own subprocess (same seeded inputs), so the peak resident
memory printed for each is its own (`resource.getrusage(...).ru_maxrss`, minus nothing: it includes the inputs).

Usage (see README.md):
    uv run python benchmarks/reid_eval/bench_reid_eval.py                 # MSMT17 / 4 in each dimension
    uv run python benchmarks/reid_eval/bench_reid_eval.py --scale 1       # full MSMT17 size (reference needs ~24 GB)
    uv run python benchmarks/reid_eval/bench_reid_eval.py --ours-only --scale 1   # full size, ours only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

MSMT17 = {"num_query": 11659, "num_gallery": 82161, "num_ids": 3060, "num_cams": 15}


def make_problem(
    num_query: int, num_gallery: int, num_ids: int, num_cams: int, dim: int, seed: int = 0, noise: float = 4.0
):
    """Seeded random re-ID problem: features = identity centre + camera offset + noise, L2-normalised."""
    gen = torch.Generator().manual_seed(seed)
    g_pids = torch.randint(0, num_ids, (num_gallery,), generator=gen)
    q_pids = torch.randint(0, num_ids, (num_query,), generator=gen)
    g_cams = torch.randint(0, num_cams, (num_gallery,), generator=gen)
    q_cams = torch.randint(0, num_cams, (num_query,), generator=gen)
    centres = torch.randn(num_ids, dim, generator=gen)
    cam_offsets = 0.5 * torch.randn(num_cams, dim, generator=gen)

    def feats(pids, cams):
        out = torch.empty(len(pids), dim)
        for s in range(0, len(pids), 8192):
            p, c = pids[s : s + 8192], cams[s : s + 8192]
            out[s : s + 8192] = centres[p] + cam_offsets[c] + noise * torch.randn(len(p), dim, generator=gen)
        return torch.nn.functional.normalize(out, dim=1)

    return feats(q_pids, q_cams), feats(g_pids, g_cams), q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy()


def reference_eval(distmat: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50) -> tuple[dict, dict]:
    """Full argsort, then per query: drop same-id-same-camera items, CMC, AP = mean precision at each match, INP."""
    times = {}
    t = time.perf_counter()
    order = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[order] == q_pids[:, None]).astype(np.int32)
    times["argsort + match matrix"] = time.perf_counter() - t
    t = time.perf_counter()
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        row = order[i]
        keep = ~((g_pids[row] == q_pids[i]) & (g_cams[row] == q_cams[i]))
        hits = matches[i][keep]
        if not hits.any():
            continue
        cum = hits.cumsum()
        all_cmc.append((cum[:max_rank] >= 1).astype(np.float64))
        positions = np.flatnonzero(hits) + 1.0
        all_ap.append(np.mean(np.arange(1, len(positions) + 1) / positions))
        all_inp.append(len(positions) / positions[-1])
    times["per-query loop"] = time.perf_counter() - t
    cmc = np.mean(all_cmc, axis=0)
    return {
        "rank1": cmc[0],
        "rank5": cmc[4],
        "rank10": cmc[9],
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
    }, times


def reference_rerank(q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3) -> np.ndarray:
    """Zhong et al. CVPR'17 re-ranking, dense and looped over samples (Eq. 6-12), on squared Euclidean distances."""
    feats = np.concatenate([q, g]).astype(np.float64)
    n, nq = len(feats), len(q)
    sq = (feats**2).sum(1)
    dist = np.maximum(sq[:, None] + sq[None] - 2 * feats @ feats.T, 0)
    dist = dist / dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")
    half = int(np.around(k1 / 2)) + 1

    def reciprocal(i, width):
        return np.array([j for j in rank[i, :width] if i in rank[j, :width]])

    V = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1 + 1)
        expanded = list(r)
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded += list(rc)
        idx = np.unique(expanded)
        w = np.exp(-dist[i, idx])
        V[i, idx] = w / w.sum()
    V = np.stack([V[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.zeros((nq, n))
    for i in range(nq):
        overlap = np.minimum(V[i][None], V).sum(1)
        jac[i] = 1 - overlap / (2 - overlap)
    return (jac * (1 - lam) + dist[:nq] * lam)[:, nq:]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_part(args) -> dict:
    from cvlab_shared.metrics.rerank import evaluate_reranked, k_reciprocal_rerank
    from cvlab_shared.metrics.retrieval import evaluate_distmat, evaluate_retrieval

    out: dict = {"times": {}}
    if args.part in ("ours", "reference"):
        q, g, qp, gp, qc, gc = make_problem(args.num_query, args.num_gallery, args.num_ids, args.num_cams, args.dim)
        out["input_mb"] = peak_mb()
        if args.part == "ours":
            t = time.perf_counter()
            out["metrics"] = evaluate_retrieval(q, g, qp, gp, qc, gc, metric="cosine", max_rank=50)
            out["times"]["distances + ranking + metrics (blockwise)"] = time.perf_counter() - t
        else:
            t = time.perf_counter()
            distmat = (1.0 - q @ g.T).numpy()
            out["times"]["distance matrix"] = time.perf_counter() - t
            out["metrics"], times = reference_eval(distmat, qp, gp, qc, gc)
            out["times"].update(times)
            t = time.perf_counter()
            out["ours_on_same_distmat"] = evaluate_distmat(torch.from_numpy(distmat), qp, gp, qc, gc)
            out["times"]["ours: ranking + metrics on the same matrix"] = time.perf_counter() - t
    else:
        q, g, qp, gp, qc, gc = make_problem(
            args.rerank_query,
            args.rerank_gallery,
            args.rerank_ids,
            args.num_cams,
            args.rerank_dim,
            seed=1,
            noise=args.rerank_noise,
        )
        out["input_mb"] = peak_mb()
        t = time.perf_counter()
        if args.part == "rerank_ours":
            out["metrics"] = evaluate_reranked(q, g, qp, gp, qc, gc)
        else:
            dist = reference_rerank(q.numpy(), g.numpy())
            out["metrics"], _ = reference_eval(dist, qp, gp, qc, gc)
        out["times"]["re-ranking + evaluation"] = time.perf_counter() - t
        if args.part == "rerank_ours":
            dist = k_reciprocal_rerank(q, g).numpy()  # the same rows again, kept whole to compare with the reference
            base = evaluate_retrieval(q, g, qp, gp, qc, gc, metric="euclidean")
            out["before_rerank"] = {k: float(base[k]) for k in ("rank1", "mAP", "mINP")}
        np.save(args.save, dist)
    out["peak_mb"] = peak_mb()
    out["metrics"] = {
        k: float(v) for k, v in out["metrics"].items() if k in ("rank1", "rank5", "rank10", "mAP", "mINP")
    }
    if "ours_on_same_distmat" in out:
        out["ours_on_same_distmat"] = {k: float(out["ours_on_same_distmat"][k]) for k in out["metrics"]}
    return out


def spawn(args, part: str, save: str = "") -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--save", save] + [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k not in ("part", "save", "ours_only", "skip_rerank", "skip_eval", "scale", "threads")
    ]
    env = dict(
        os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(m: dict) -> tuple[str, str, str]:
    return f"{m['rank1']:.6f}", f"{m['mAP']:.6f}", f"{m['mINP']:.6f}"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.25, help="fraction of the MSMT17 test size in each dimension")
    p.add_argument("--num-query", type=int, default=0)
    p.add_argument("--num-gallery", type=int, default=0)
    p.add_argument("--num-ids", type=int, default=0)
    p.add_argument("--num-cams", type=int, default=MSMT17["num_cams"])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--rerank-query", type=int, default=500)
    p.add_argument("--rerank-gallery", type=int, default=2500)
    p.add_argument("--rerank-ids", type=int, default=300)
    p.add_argument("--rerank-dim", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both implementations (torch, BLAS)")
    p.add_argument("--rerank-noise", type=float, default=2.0)
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--ours-only", action="store_true", help="run only our evaluation (for the full MSMT17 size)")
    p.add_argument("--skip-rerank", action="store_true")
    p.add_argument("--part", default="", help=argparse.SUPPRESS)
    p.add_argument("--save", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    for key in ("num_query", "num_gallery", "num_ids"):
        if not getattr(args, key):
            setattr(args, key, max(1, round(MSMT17[key] * args.scale)))
    if args.part:
        print(json.dumps(run_part(args)))
        return

    if not args.skip_eval:
        evaluation_table(args)
    if not args.skip_rerank:
        rerank_table(args)


def evaluation_table(args) -> None:
    print(
        f"evaluation problem: {args.num_query} queries x {args.num_gallery} gallery, {args.dim}-d, "
        f"{args.num_ids} ids, {args.num_cams} cams; {args.threads} CPU thread(s) each"
    )
    ours = spawn(args, "ours")
    rows = [("implementation", "step", "seconds", "peak RSS MB", "R1", "mAP", "mINP")]
    for step, sec in ours["times"].items():
        rows.append(("cvlab_shared", step, f"{sec:.1f}", f"{ours['peak_mb']:.0f}", *fmt(ours["metrics"])))
    if not args.ours_only:
        ref = spawn(args, "reference")
        for step, sec in ref["times"].items():
            who = "ours (same matrix)" if step.startswith("ours") else "NumPy reference"
            metrics = ref["ours_on_same_distmat"] if step.startswith("ours") else ref["metrics"]
            rows.append((who, step, f"{sec:.1f}", f"{ref['peak_mb']:.0f}", *fmt(metrics)))
    print(table(rows))
    print(f"input features alone: {ours['input_mb']:.0f} MB peak RSS before evaluation")
    if not args.ours_only:
        t = ref["times"]
        ref_rank = t["argsort + match matrix"] + t["per-query loop"]
        ours_rank = t["ours: ranking + metrics on the same matrix"]
        ref_total = ref_rank + t["distance matrix"]
        ours_total = ours["times"]["distances + ranking + metrics (blockwise)"]
        diff = max(abs(ref["metrics"][k] - ours["metrics"][k]) for k in ours["metrics"])
        diff_same = max(abs(ref["metrics"][k] - ref["ours_on_same_distmat"][k]) for k in ours["metrics"])
        print(
            f"speed-up, ranking + metrics after the distance matrix: {ref_rank / ours_rank:.1f}x "
            f"({ref_rank:.1f}s vs {ours_rank:.1f}s)"
        )
        print(
            f"speed-up, whole evaluation from features: {ref_total / ours_total:.1f}x "
            f"({ref_total:.1f}s vs {ours_total:.1f}s)"
        )
        print(f"max |metric difference|: same matrix {diff_same:.2e}, ours from features {diff:.2e}")
        print(f"peak RSS: ours {ours['peak_mb']:.0f} MB, reference {ref['peak_mb']:.0f} MB")


def rerank_table(args) -> None:
    print(
        f"\nre-ranking problem (k1=20, k2=6, lambda=0.3): {args.rerank_query} queries x "
        f"{args.rerank_gallery} gallery, {args.rerank_dim}-d"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        r_ours = spawn(args, "rerank_ours", f"{tmp}/ours.npy")
        r_ref = spawn(args, "rerank_reference", f"{tmp}/ref.npy")
        max_diff = float(np.abs(np.load(f"{tmp}/ours.npy") - np.load(f"{tmp}/ref.npy")).max())
    rows = [("implementation", "seconds", "peak RSS MB", "R1", "mAP", "mINP")]
    for who, r in (("cvlab_shared", r_ours), ("NumPy reference", r_ref)):
        rows.append((who, f"{r['times']['re-ranking + evaluation']:.1f}", f"{r['peak_mb']:.0f}", *fmt(r["metrics"])))
    print(table(rows))
    speed = r_ref["times"]["re-ranking + evaluation"] / r_ours["times"]["re-ranking + evaluation"]
    print(f"re-ranking speed-up {speed:.1f}x; max |distance difference| {max_diff:.2e}")
    before = r_ours["before_rerank"]
    print(
        f"before re-ranking (ours, Euclidean): R1 {before['rank1']:.6f} mAP {before['mAP']:.6f} "
        f"mINP {before['mINP']:.6f}"
    )


if __name__ == "__main__":
    main()
