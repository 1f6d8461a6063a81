"""Video evaluation at MARS test size: `cvlab_shared.metrics.video_retrieval.evaluate_video` against a
straightforward NumPy reference (STMN's `Video_Cmc` structure: a full argsort, then a Python loop per query),
same seeded tracklet features, same run.

MARS protocol for both: the gallery is every test tracklet (queries included), junk (pid -1) dropped, pid 0
distractors kept as non-matches, same-id-same-camera items removed (which removes the query itself), cosine
distance, non-interpolated AP, queries without a valid match skipped.

Usage:
    uv run --locked python benchmarks/stmn/eval_cost.py              # MARS size: 1,980 x 12,180, 2,048-d
    uv run --locked python benchmarks/stmn/eval_cost.py --scale 0.1  # CI size
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cvlab_shared.metrics.retrieval import evaluate_distmat
from cvlab_shared.metrics.video_retrieval import evaluate_video

MARS = {"tracks": 12180, "queries": 1980, "ids": 625, "distractors": 800, "junk": 380, "cams": 6}


def make_problem(scale: float, dim: int, seed: int = 0, noise: float = 4.0):
    """Seeded MARS-shaped test set: tracklet features = identity centre + camera offset + noise, L2-normalised."""
    gen = torch.Generator().manual_seed(seed)
    n = round(MARS["tracks"] * scale)
    n_junk, n_dis = round(MARS["junk"] * scale), round(MARS["distractors"] * scale)
    ids = max(2, round(MARS["ids"] * scale))
    pids = torch.cat([torch.randint(1, ids + 1, (n - n_junk - n_dis,), generator=gen),
                      torch.zeros(n_dis, dtype=torch.long), torch.full((n_junk,), -1)])
    pids = pids[torch.randperm(n, generator=gen)]
    cams = torch.randint(0, MARS["cams"], (n,), generator=gen)
    centres = torch.randn(ids + 2, dim, generator=gen)
    offsets = 0.5 * torch.randn(MARS["cams"], dim, generator=gen)
    feats = centres[pids.clamp_min(0)] + offsets[cams] + noise * torch.randn(n, dim, generator=gen)
    real = torch.nonzero(pids > 0).flatten()
    query_idx = real[torch.randperm(len(real), generator=gen)[: round(MARS["queries"] * scale)]].sort().values
    return torch.nn.functional.normalize(feats, dim=1), pids.numpy(), cams.numpy(), query_idx.numpy()


def reference(distmat: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int = 20) -> dict:
    """Per query: argsort the row, drop same-id-same-camera and junk items, CMC, AP, INP (Video_Cmc structure)."""
    order = np.argsort(distmat, axis=1, kind="stable")
    cmc, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        row = order[i]
        keep = ~((g_pids[row] == q_pids[i]) & (g_cams[row] == q_cams[i])) & (g_pids[row] != -1)
        hits = (g_pids[row][keep] == q_pids[i]).astype(np.int32)
        if not hits.any():
            continue
        cmc.append((hits.cumsum()[:max_rank] >= 1).astype(np.float64))
        positions = np.flatnonzero(hits) + 1.0
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
        inps.append(len(positions) / positions[-1])
    curve = np.mean(cmc, axis=0)
    return {"rank1": curve[0], "rank5": curve[4], "rank10": curve[9], "rank20": curve[19],
            "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the MARS test size")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    feats, pids, cams, query_idx = make_problem(args.scale, args.dim)
    print(f"MARS-shaped problem: {len(query_idx)} queries x {len(pids)} gallery tracklets (queries inside), "
          f"{args.dim}-d, {args.threads} thread(s)")
    rows = []
    t = time.perf_counter()
    ours = evaluate_video(feats, pids, cams, query_idx, max_rank=20)
    rows.append(("evaluate_video", "distances + ranking + metrics", time.perf_counter() - t, ours))
    t = time.perf_counter()
    distmat = (1.0 - feats[query_idx] @ feats.T).numpy()
    t_dist = time.perf_counter() - t
    rows.append(("NumPy reference", "distance matrix", t_dist, None))
    t = time.perf_counter()
    ref = reference(distmat, pids[query_idx], pids, cams[query_idx], cams)
    t_ref = time.perf_counter() - t
    rows.append(("NumPy reference", "ranking + metrics", t_ref, ref))
    t = time.perf_counter()
    same = evaluate_distmat(torch.from_numpy(distmat), pids[query_idx], pids, cams[query_idx], cams, max_rank=20)
    same["rank20"] = same["cmc"][19]
    t_ours = time.perf_counter() - t
    rows.append(("cvlab_shared (same matrix)", "ranking + metrics", t_ours, same))
    keys = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
    print("| implementation | step | seconds | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for who, step, sec, m in rows:
        vals = " | ".join(f"{m[k]:.6f}" for k in keys) if m else " | ".join("" for _ in keys)
        print(f"| {who} | {step} | {sec:.2f} | {vals} |")
    worst = max(abs(float(ours[k]) - float(ref[k])) for k in keys)
    worst_same = max(abs(float(same[k]) - float(ref[k])) for k in keys)
    print(f"largest metric difference vs the reference: evaluate_video {worst:.2e}, same-matrix {worst_same:.2e}")
    print(f"ranking + metrics speed-up on the same matrix: {t_ref / t_ours:.1f}x")
    if worst > 1e-6 or worst_same > 1e-6:
        raise SystemExit("metrics differ from the reference")


if __name__ == "__main__":
    main()
