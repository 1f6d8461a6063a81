"""Person-search evaluation at PRW test size: the core's vectorised evaluator vs a straightforward per-query reference.

A synthetic PRW-sized test set: 6,112 gallery frames over 6 cameras with about 25 boxes each (labelled identities and
unlabelled people), 2,057 queries, 256-d features that carry the identity plus noise, detections = jittered ground
truth + false positives with random scores. The reference loops over queries and gallery frames in Python, exactly
as the protocol reads (the legacy evaluator's structure: sort one frame's detections by similarity, take the first
one over the relaxed IoU as the true positive, then AP x recall over all detections). Both run in this process on the
same inputs; the script checks the per-query APs and top-k are identical and prints the times.

    uv run --locked python benchmarks/oimnet_pp/eval_speed.py                  # reference on the first 300 queries
    uv run --locked python benchmarks/oimnet_pp/eval_speed.py --ref-queries 0  # reference on all 2,057 queries
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cvlab_shared.data.person_search import QueryRecord, SceneRecord
from cvlab_shared.metrics.person_search import TOPK, average_precision, evaluate_search, relaxed_iou_threshold


def make_set(frames: int, queries: int, boxes: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    n_ids = queries
    codes = rng.standard_normal((n_ids + 1, dim)).astype(np.float32)
    gallery, dets, feats = [], [], []
    for f in range(frames):
        cam = f % 6 + 1
        n = int(rng.integers(boxes - 5, boxes + 6))
        x1 = rng.uniform(0, 1800, n)
        y1 = rng.uniform(0, 900, n)
        w = rng.uniform(15, 120, n)
        gt = np.c_[x1, y1, x1 + w, y1 + 2.5 * w].astype(np.int32)
        pids = np.where(rng.random(n) < 0.6, rng.integers(1, n_ids + 1, n), 5555)
        gallery.append(SceneRecord("", f"c{cam}s1_{f:06d}.jpg", cam, gt, pids))
        keep = rng.random(n) < 0.9  # the detector misses 10 %
        jitter = gt[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        fp = np.c_[rng.uniform(0, 1800, 3), rng.uniform(0, 900, 3), np.zeros((3, 2))]
        fp[:, 2:] = fp[:, :2] + rng.uniform(20, 100, (3, 2))
        det = np.r_[jitter, fp]
        det = np.c_[det, rng.uniform(0.3, 1.0, len(det))]
        code = np.r_[codes[np.where(pids[keep] == 5555, 0, pids[keep])], rng.standard_normal((3, dim))]
        feat = code + rng.normal(0, 1.5, code.shape)
        dets.append(det)
        feats.append(feat / np.linalg.norm(feat, axis=1, keepdims=True))
    qs, qf = [], []
    by_pid: dict[int, list[int]] = {}
    for i, s in enumerate(gallery):
        for pid in set(s.pids.tolist()) - {5555}:
            by_pid.setdefault(pid, []).append(i)
    for pid in sorted(p for p, where in by_pid.items() if len(where) >= 2)[:queries]:
        s = gallery[by_pid[pid][0]]
        k = int(np.flatnonzero(s.pids == pid)[0])
        qs.append(QueryRecord("", s.name, s.cam, s.boxes[k], pid))
        f = codes[pid] + rng.normal(0, 1.5, dim)
        qf.append(f / np.linalg.norm(f))
    # float64 features: float32 similarities from a block matmul and from per-frame dot products round differently,
    # which can swap near-tied detections; in float64 both evaluators see the same numbers
    return gallery, dets, feats, qs, np.asarray(qf)


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference(gallery, dets, feats, queries, qfeats, det_thresh=0.5, progress=250):
    """Per query, per gallery frame, per detection: the protocol as the legacy evaluator loops over it."""
    start = time.perf_counter()
    kept = []
    for det, feat in zip(dets, feats):
        m = det[:, 4] >= det_thresh
        kept.append((det[m], feat[m]))
    aps, topk = [], []
    for i, (q, f) in enumerate(zip(queries, qfeats)):
        if progress and i and i % progress == 0:
            print(f"  reference: {i}/{len(queries)} queries, {time.perf_counter() - start:.0f} s", flush=True)
        y_true, y_score, count_gt, count_tp = [], [], 0, 0
        for s, (det, feat) in zip(gallery, kept):
            if s.name == q.name:
                continue
            hits = np.flatnonzero(s.pids == q.pid)
            count_gt += len(hits) > 0
            if len(det) == 0:
                continue
            sim = feat @ f
            label = np.zeros(len(sim))
            if len(hits):
                gt = s.boxes[hits[0]]
                thr = relaxed_iou_threshold(gt)
                order = np.argsort(sim)[::-1]
                sim, det = sim[order], det[order]
                for j in range(len(det)):
                    if _iou(det[j], gt) >= thr:
                        label[j] = 1
                        count_tp += 1
                        break
            y_true.extend(label)
            y_score.extend(sim)
        y_true, y_score = np.asarray(y_true), np.asarray(y_score)
        aps.append(0.0 if count_tp == 0 else average_precision(y_true, y_score) * count_tp / count_gt)
        order = np.argsort(y_score)[::-1]
        topk.append([float(y_true[order][:k].any()) for k in TOPK])
    return np.asarray(aps), np.asarray(topk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6112)
    parser.add_argument("--queries", type=int, default=2057)
    parser.add_argument("--boxes", type=int, default=25)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ref-queries", type=int, default=300, help="queries the reference runs on (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gallery, dets, feats, queries, qfeats = make_set(args.frames, args.queries, args.boxes, args.dim, args.seed)
    n_det = sum(len(d) for d in dets)
    print(
        f"gallery {len(gallery)} frames, {n_det} detections ({n_det / len(gallery):.1f}/frame), {len(queries)} queries"
    )
    print(f"BLAS threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} (both evaluators)", flush=True)
    t = time.perf_counter()
    fast = evaluate_search(gallery, dets, feats, queries, qfeats)
    t_fast = time.perf_counter() - t
    print(f"vectorised: {t_fast:.2f} s", flush=True)
    n_ref = len(queries) if args.ref_queries <= 0 else min(args.ref_queries, len(queries))
    t = time.perf_counter()
    ref_aps, ref_topk = reference(gallery, dets, feats, queries[:n_ref], qfeats[:n_ref])
    t_ref = time.perf_counter() - t
    ap_diff = np.abs(fast.aps[:n_ref] - ref_aps)
    topk_diff = int((fast.topk[:n_ref] != ref_topk).any(1).sum())
    same = ap_diff.max() <= 1e-9 and topk_diff == 0
    print(f"largest per-query AP difference {ap_diff.max():.2e}; queries whose top-k differ: {topk_diff}")
    per_fast, per_ref = t_fast / len(queries), t_ref / n_ref
    print("| evaluator | queries | time (s) | ms / query | mAP | top-1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [
        ("vectorised (core)", len(queries), t_fast, per_fast, fast.aps.mean(), fast.topk[:, 0].mean()),
        ("per-query reference", n_ref, t_ref, per_ref, ref_aps.mean(), ref_topk[:, 0].mean()),
    ]
    for name, n, seconds, per, m_ap, top1 in rows:
        print(f"| {name} | {n} | {seconds:.2f} | {1000 * per:.2f} | {m_ap:.4f} | {top1:.4f} |")
    sub = fast.aps[:n_ref].mean()
    print(f"vectorised on the same {n_ref} queries: mAP {sub:.4f}; per-query APs and top-k identical: {same}")
    print(f"speed-up per query: {per_ref / per_fast:.1f}x")
    if not same:
        raise SystemExit("error: the vectorised evaluator and the reference disagree")


if __name__ == "__main__":
    main()
