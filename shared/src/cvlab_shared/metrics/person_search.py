"""Person-search evaluation (detection + re-ID), the protocol of OIM / NAE / SeqNet / OIMNet++ `eval_func.py`.

Detection (`evaluate_detection`): per image, IoU >= 0.5 cells between GT boxes and detections (score >=
`det_thresh`), each detection keeps only its best GT and each GT only its best detection; recall = TP / #GT and
AP = average precision over every kept detection x recall (the legacy "AP", not VOC AP).

Search (`evaluate_search`): gallery detections with score < `det_thresh` (0.5) are dropped; similarity is the dot
product of (L2-normalised) features. In each gallery image holding the query's identity, the GT box (the first
one if the identity appears twice) is found by the highest-similarity detection whose IoU reaches
min(0.5, w h / ((w + 10)(h + 10))) (the relaxed threshold for small boxes); that single detection is the true
positive. AP_q = AP(all kept detections) x count_tp / count_gt (0 without a TP), top-k = a TP among the k most
similar detections. Galleries: `protocol=None` is PRW's (every other test frame; `ignore_cam_id=False` keeps only
other cameras, the classic cross-camera PRW), a protocol list is CUHK-SYSU's TestG{N} (per query: (image name,
GT box or None) entries; a repeated image counts its GT again but its detections once, the legacy quirk). CBGM
(Li et al., SeqNet, AAAI'21): for the images of the k1 most similar detections, a maximum-weight bipartite matching
between the query image's first k2 detections (query box first) and the image's detections sets the similarity of
the query box's partner to the largest matched edge weight (what SeqNet's `run_kuhn_munkres` returns).

Everything is vectorised per query over one flat array of gallery detections (no per-image Python loop), so the
PRW test size (2,057 queries x 6,112 frames) evaluates in seconds; results equal the legacy evaluator's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

UNLABELED = 5555
TOPK = (1, 5, 10)


class SceneLike(Protocol):
    name: str
    cam: int
    boxes: np.ndarray
    pids: np.ndarray


class QueryLike(Protocol):
    name: str
    cam: int
    box: np.ndarray
    pid: int


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of every row of `boxes` (n, 4) xyxy with one `box` (4,), float64 as the legacy scalar code computes it."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    box = np.asarray(box, dtype=np.float64)
    w = np.maximum(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0)
    h = np.maximum(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0)
    inter = w * h
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU matrix of xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sklearn's `average_precision_score` (step-wise, tied scores grouped); 0.0 when there is no positive."""
    y_true = np.asarray(y_true, dtype=bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    pos = np.sort(y_score[y_true])[::-1]
    if len(pos) == 0:
        return 0.0
    ranked = np.sort(y_score)
    # items at or above each positive's score, and positives at or above it (ties grouped, as sklearn's thresholds)
    above = len(ranked) - np.searchsorted(ranked, pos, side="left")
    pos_above = len(pos) - np.searchsorted(np.sort(pos), pos, side="left")
    return float(np.mean(pos_above / above))


def relaxed_iou_threshold(box: np.ndarray, iou: float = 0.5) -> float:
    """min(iou, w h / ((w + 10)(h + 10))) for an xyxy GT box: the lower bar small boxes get in person search."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    return min(iou, (w * h) / ((w + 10) * (h + 10)))


def _checked_dets(dets: np.ndarray | Sequence, where: str) -> np.ndarray:
    arr = np.asarray(dets, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5))
    if arr.ndim != 2 or arr.shape[1] < 5:
        raise ValueError(f"{where}: detections must be (n, 5) rows [x1, y1, x2, y2, score], got {arr.shape}")
    return arr


def evaluate_detection(
    gallery: Sequence[SceneLike],
    detections: Sequence[np.ndarray],
    det_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    labeled_only: bool = False,
) -> dict[str, float]:
    """Detection recall and the legacy AP (average precision over detections x recall) at IoU `iou_thresh`."""
    if len(gallery) != len(detections):
        raise ValueError(f"{len(gallery)} gallery images but {len(detections)} detection arrays")
    y_true, y_score = [], []
    count_gt = count_tp = 0
    for scene, det in zip(gallery, detections):
        gt = np.asarray(scene.boxes, dtype=np.float64).reshape(-1, 4)
        if labeled_only:
            gt = gt[np.asarray(scene.pids).ravel() != UNLABELED]
            if len(gt) == 0:
                continue
        det = _checked_dets(det, scene.name)
        det = det[det[:, 4] >= det_thresh]
        if len(det) == 0:
            count_gt += len(gt)
            continue
        y_score.append(det[:, 4])
        if len(gt) == 0:
            y_true.append(np.zeros(len(det), dtype=bool))
            continue
        ious = pairwise_iou(gt, det[:, :4]).astype(np.float32)  # the legacy code stores IoUs in float32
        keep = ious >= iou_thresh
        keep &= np.arange(len(gt))[:, None] == ious.argmax(0)[None, :]  # each detection: its best GT only
        keep &= np.arange(len(det))[None, :] == ious.argmax(1)[:, None]  # each GT: its best detection only
        y_true.append(keep.any(0))
        count_tp += int(keep.sum())
        count_gt += len(gt)
    recall = count_tp / count_gt if count_gt else 0.0
    if not y_score:
        return {"recall": recall, "ap": 0.0}
    ap = average_precision(np.concatenate(y_true), np.concatenate(y_score)) * recall
    return {"recall": recall, "ap": ap}


@dataclass
class SearchResult:
    """Per-query APs and top-k hits; `metrics()` gives mAP and top-1/5/10."""

    aps: np.ndarray
    topk: np.ndarray
    ranked: list[dict] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        out = {"mAP": float(np.mean(self.aps)) if len(self.aps) else 0.0}
        for j, k in enumerate(TOPK):
            out[f"top{k}"] = float(np.mean(self.topk[:, j])) if len(self.topk) else 0.0
        return out


class _Gallery:
    """Gallery detections (score >= det_thresh) of every image in one flat array, with image offsets."""

    def __init__(
        self,
        gallery: Sequence[SceneLike],
        dets: Sequence[np.ndarray],
        feats: Sequence[np.ndarray],
        thr: float,
        dim: int,
    ):
        if not (len(gallery) == len(dets) == len(feats)):
            raise ValueError(f"{len(gallery)} gallery images, {len(dets)} detection and {len(feats)} feature arrays")
        boxes, scores, flat, counts = [], [], [], []
        for scene, det, feat in zip(gallery, dets, feats):
            det = _checked_dets(det, scene.name)
            feat = np.asarray(feat)
            feat = feat.astype(np.result_type(feat.dtype, np.float32), copy=False).reshape(len(det), dim)
            keep = det[:, 4] >= thr
            boxes.append(det[keep, :4])
            scores.append(det[keep, 4])
            flat.append(feat[keep])
            counts.append(int(keep.sum()))
        self.boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        self.feats = np.concatenate(flat) if flat else np.zeros((0, dim), np.float32)  # float64 stays float64
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.image_of = np.repeat(np.arange(len(gallery)), self.counts)
        self.names = [s.name for s in gallery]
        self.index = {}
        for i, name in enumerate(self.names):
            self.index.setdefault(name, i)
        self.cams = np.asarray([s.cam for s in gallery])

    def rows(self, image: int) -> slice:
        return slice(int(self.starts[image]), int(self.starts[image] + self.counts[image]))


def _cbgm(
    sims: np.ndarray,
    kept: np.ndarray,
    gal: _Gallery,
    query_dets_feats: np.ndarray,
    k1: int,
    k2: int,
) -> np.ndarray:
    """Context bipartite graph matching: re-score the query box's partner in the images of the top-k1 detections."""
    sims = sims.copy()
    cand = np.flatnonzero(kept)
    if len(cand) == 0:
        return sims
    top = cand[np.argsort(sims[cand], kind="stable")[-k1:]]
    qf = np.asarray(query_dets_feats, dtype=np.float32)[:k2]
    for image in np.unique(gal.image_of[top]):
        rows = gal.rows(image)
        weights = qf @ gal.feats[rows].T  # (query-image dets, gallery-image dets)
        r, c = linear_sum_assignment(weights, maximize=True)
        first = np.flatnonzero(r == 0)
        if len(first):  # SeqNet's km.py returns the largest matched weight as the "max value"
            sims[rows.start + c[first[0]]] = float(weights[r, c].max())
    return sims


def _all_candidates(gal: _Gallery, images: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """For every GT box (image, xyxy): the flat indices of that image's detections over its relaxed IoU, at once."""
    if len(images) == 0:
        return []
    counts = gal.counts[images]
    gt_of_pair = np.repeat(np.arange(len(images)), counts)
    first = np.repeat(gal.starts[images] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    det_of_pair = np.arange(int(counts.sum())) + first
    a, b = gal.boxes[det_of_pair], boxes.reshape(-1, 4)[gt_of_pair]
    w = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0)
    h = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0)
    inter = w * h
    iou = inter / ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    thr = np.minimum(0.5, bw * bh / ((bw + 10) * (bh + 10)))
    hit = iou >= thr[gt_of_pair]
    ends = np.cumsum(counts)
    return [d[d >= 0] for d in np.split(np.where(hit, det_of_pair, -1), ends[:-1])]


def evaluate_search(
    gallery: Sequence[SceneLike],
    gallery_dets: Sequence[np.ndarray],
    gallery_feats: Sequence[np.ndarray],
    queries: Sequence[QueryLike],
    query_feats: np.ndarray,
    protocol: Sequence[Sequence[tuple[str, np.ndarray | None]]] | None = None,
    det_thresh: float = 0.5,
    ignore_cam_id: bool = True,
    cbgm: bool = False,
    query_dets_feats: Sequence[np.ndarray] | None = None,
    k1: int = 30,
    k2: int = 4,
    keep_ranking: int = 0,
    block: int = 256,
) -> SearchResult:
    """Person-search mAP / top-k with detection recall folded in (see the module docstring for the protocol).

    Args:
        gallery: gallery images (name, cam, boxes xyxy, pids).
        gallery_dets: per image (n_i, 5) detections [x1, y1, x2, y2, score].
        gallery_feats: per image (n_i, d) L2-normalised features of those detections.
        queries: query boxes (name, cam, box xyxy, pid).
        query_feats: (q, d) features of the query boxes.
        protocol: None for PRW-style galleries, else per query a list of (image name, xyxy GT box or None).
        det_thresh: gallery detections below this score are ignored (0.5).
        ignore_cam_id: PRW only: True keeps same-camera frames in the gallery (the OIMNet++/SeqNet default).
        cbgm: apply context bipartite graph matching (needs `query_dets_feats`).
        query_dets_feats: per query, features of its image's detections with the query box first.
        k1, k2: CBGM's top detections and query-image detections (CUHK 10/3, PRW 30/4).
        keep_ranking: keep this many top-ranked gallery detections per query (for plots).
        block: queries per similarity block.
    """
    query_feats = np.asarray(query_feats)
    query_feats = query_feats.astype(np.result_type(query_feats.dtype, np.float32), copy=False).reshape(
        len(queries), -1
    )
    gal = _Gallery(gallery, gallery_dets, gallery_feats, det_thresh, query_feats.shape[1])
    if protocol is not None and len(protocol) != len(queries):
        raise ValueError(f"the protocol lists {len(protocol)} queries but {len(queries)} query features were given")
    if cbgm and (query_dets_feats is None or len(query_dets_feats) != len(queries)):
        raise ValueError("cbgm=True needs query_dets_feats: one (n, d) array per query, the query box first")
    # PRW ground truth: per pid, the (image, first box of that pid) pairs
    by_pid: dict[int, list[tuple[int, np.ndarray]]] = {}
    cache: dict[tuple[int, bytes], np.ndarray] = {}
    if protocol is None:
        gt_img, gt_box = [], []
        for i, scene in enumerate(gallery):
            pids = np.asarray(scene.pids).ravel()
            boxes = np.asarray(scene.boxes).reshape(-1, 4)
            for pid in dict.fromkeys(pids.tolist()):
                box = boxes[np.flatnonzero(pids == pid)[0]].astype(np.float64)
                by_pid.setdefault(int(pid), []).append((i, box))
                gt_img.append(i)
                gt_box.append(box)
        for (i, box), cand in zip(
            zip(gt_img, gt_box), _all_candidates(gal, np.asarray(gt_img, int), np.asarray(gt_box))
        ):
            cache[(i, box.tobytes())] = cand

    def candidates(i: int, box: np.ndarray) -> np.ndarray:
        """Detections of image i over the relaxed IoU with GT `box` (flat indices); cached across queries."""
        key = (i, np.asarray(box, dtype=np.float64).tobytes())
        if key not in cache:
            rows = gal.rows(i)
            hit = box_iou(gal.boxes[rows], box) >= relaxed_iou_threshold(box)
            cache[key] = rows.start + np.flatnonzero(hit)
        return cache[key]

    same_name: dict[int, np.ndarray] = {}
    for i, name in enumerate(gal.names):
        same_name.setdefault(gal.index[name], []).append(i)
    same_name = {k: np.asarray(v) for k, v in same_name.items()}
    aps = np.zeros(len(queries))
    topk = np.zeros((len(queries), len(TOPK)))
    ranked: list[dict] = []
    for b0 in range(0, len(queries), block):
        sims_block = query_feats[b0 : b0 + block] @ gal.feats.T
        for qi in range(b0, min(b0 + block, len(queries))):
            query, sims = queries[qi], sims_block[qi - b0]
            if protocol is None:
                own = gal.index.get(query.name, -1)
                gts = [(i, box) for i, box in by_pid.get(int(query.pid), []) if gal.names[i] != query.name]
                image_ok = np.ones(len(gal.names), dtype=bool)
                if own >= 0:
                    image_ok[same_name[own]] = False
                if not ignore_cam_id:
                    image_ok &= gal.cams != query.cam
                    gts = [(i, box) for i, box in gts if gal.cams[i] != query.cam]
                count_gt = len(gts)
            else:
                image_ok = np.zeros(len(gal.names), dtype=bool)
                gts, seen, count_gt = [], set(), 0
                for name, box in protocol[qi]:
                    has_gt = box is not None and np.size(box) > 0
                    count_gt += has_gt
                    if name not in gal.index:
                        raise ValueError(f"protocol of query {qi} names gallery image {name!r}, not in the gallery")
                    i = gal.index[name]
                    if i in seen:
                        continue
                    seen.add(i)
                    image_ok[i] = True
                    if has_gt:
                        gts.append((i, np.asarray(box, dtype=np.float64).ravel()))
            kept = image_ok[gal.image_of]
            if cbgm:
                sims = _cbgm(sims, kept, gal, query_dets_feats[qi], k1, k2)
            positives = []
            for i, box in gts:
                cand = candidates(i, box)
                if len(cand):
                    positives.append(cand[np.argmax(sims[cand])])
            if count_gt and len(positives) > count_gt:
                raise AssertionError("more true positives than ground-truth images")
            scores = sims[kept]
            if positives:
                pos_scores = sims[np.asarray(positives, dtype=np.int64)]
                # rank of each positive = detections scoring at least as high (ties grouped, as sklearn's AP)
                above = (scores[None, :] >= pos_scores[:, None]).sum(1)
                pos_above = (pos_scores[None, :] >= pos_scores[:, None]).sum(1)
                aps[qi] = float(np.mean(pos_above / above)) * len(positives) / count_gt
                best_rank = int((scores > pos_scores.max()).sum()) + 1
                topk[qi] = [float(best_rank <= k) for k in TOPK]
            if keep_ranking:
                idx = np.flatnonzero(kept)
                order = idx[np.argsort(-sims[idx], kind="stable")[:keep_ranking]]
                pos_set = set(int(p) for p in positives)
                ranked.append(
                    {
                        "query": qi,
                        "images": [gal.names[i] for i in gal.image_of[order]],
                        "boxes": gal.boxes[order],
                        "scores": sims[order],
                        "correct": [int(o) in pos_set for o in order],
                    }
                )
    return SearchResult(aps, topk, ranked)
