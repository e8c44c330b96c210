"""A literal, slow transcription of the VOC devkit's ``VOCevaldet.m`` / ``VOCap.m``.

Used as the oracle by ``tests/test_voc_eval.py`` and timed by
``benchmarks/bench_voc_eval.py`` (one copy, imported by both).  It follows the
MATLAB code line by line, with plain Python loops and scalars, and deliberately
shares no code with ``data_utils.evaluation.voc_eval``:

* per class, detections are listed image by image (the order of a results
  file), sorted by ``-confidence`` with a stable sort (MATLAB's ``sort`` is
  stable);
* each detection scans the boxes of its image and class, keeping the first box
  with the largest overlap (``if ov > ovmax``), computing the overlap only
  when the intersection has positive width and height;
* ``ovmax >= minoverlap``: difficult -> nothing (tp = fp = 0, the row stays);
  else TP if the box is not yet detected (mark it), FP otherwise;
  below -> FP;
* ``prec = tp ./ (fp + tp)`` keeps the 0/0 = NaN rows of ignored detections
  and MATLAB's ``max`` skips NaN.

Deviations from the MATLAB code, each also made by ``data_utils.evaluation.voc_eval``:
continuous coordinates (no ``+1`` in widths, heights and areas), AP ``NaN`` for a class with ``npos == 0`` and 0
(not MATLAB's NaN) when every detection of the class was ignored.  The
recall thresholds are MATLAB's ``0:0.1:1`` bit for bit (not ``i / 10``).

``random_case`` builds seeded random inputs for both the tests and the benchmark.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from data_utils.conventions import Detections
from data_utils.types import GroundTruth


def _rows(x) -> list[list[float]]:
    return np.asarray(x.detach().cpu().double() if isinstance(x, torch.Tensor) else x, dtype=np.float64).reshape(-1, 4).tolist()


def _vals(x) -> list:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
    return np.asarray(x).reshape(-1).tolist()


def _nanmax(values: list[float]) -> float | None:
    """MATLAB ``max`` over a list: NaN entries skipped; None for no number."""
    numbers = [v for v in values if not math.isnan(v)]
    return max(numbers) if numbers else None


def devkit_class_ap(
    detections, ground_truths, cls: int, minoverlap: float = 0.5, use_07_metric: bool = True
) -> tuple[float, list[int], list[int]]:
    """VOCevaldet.m for one class -> (ap, tp list, fp list) in ranked order."""
    # ground truth of this class, image by image (gt(i).BB, gt(i).diff, gt(i).det)
    gt = []
    npos = 0
    for g in ground_truths:
        boxes, classes, diff = _rows(g.boxes), _vals(g.classes), _vals(g.difficult)
        bb = [boxes[j] for j in range(len(classes)) if int(classes[j]) == cls]
        df = [bool(diff[j]) for j in range(len(classes)) if int(classes[j]) == cls]
        gt.append({"BB": bb, "diff": df, "det": [False] * len(bb)})
        npos += sum(1 for d in df if not d)

    # detections of this class, in results-file order (image by image)
    ids, confidence, BB = [], [], []
    for i, d in enumerate(detections):
        boxes, scores, classes = _rows(d.boxes), _vals(d.scores), _vals(d.classes)
        for k in range(len(scores)):
            if int(classes[k]) == cls:
                ids.append(i)
                confidence.append(float(scores[k]))
                BB.append(boxes[k])

    # [sc, si] = sort(-confidence)  (stable)
    si = sorted(range(len(confidence)), key=lambda k: -confidence[k])
    nd = len(si)
    tp = [0] * nd
    fp = [0] * nd
    for d in range(nd):
        i = ids[si[d]]
        bb = BB[si[d]]
        ovmax = -math.inf
        jmax = -1
        for j in range(len(gt[i]["BB"])):
            bbgt = gt[i]["BB"][j]
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0]
            ih = bi[3] - bi[1]
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (bbgt[2] - bbgt[0]) * (bbgt[3] - bbgt[1]) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax = ov
                    jmax = j
        if ovmax >= minoverlap:
            if not gt[i]["diff"][jmax]:
                if not gt[i]["det"][jmax]:
                    tp[d] = 1
                    gt[i]["det"][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1

    if npos == 0:
        return math.nan, tp, fp

    # cumsum, rec, prec
    ctp, cfp, rec, prec = 0, 0, [], []
    for d in range(nd):
        ctp += tp[d]
        cfp += fp[d]
        rec.append(ctp / npos)
        prec.append(ctp / (cfp + ctp) if cfp + ctp > 0 else math.nan)

    if use_07_metric:
        ap = 0.0
        # MATLAB's 0:0.1:1 (VOCevaldet.m): k*0.1 for k < 5, 0.5, then 1 - (10-k)*0.1
        # (so t = 0.30000000000000004 but exactly 0.6 and 0.7).
        thresholds = [k * 0.1 for k in range(5)] + [0.5] + [1 - (10 - k) * 0.1 for k in range(6, 11)]
        for t in thresholds:
            p = _nanmax([prec[k] for k in range(nd) if rec[k] >= t])
            ap += (0.0 if p is None else p) / 11
        return ap, tp, fp

    # VOCap.m
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        m = _nanmax([mpre[i], mpre[i + 1]])
        mpre[i] = math.nan if m is None else m
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap, tp, fp


def devkit_eval(
    detections, ground_truths, num_classes: int, minoverlap: float = 0.5, use_07_metric: bool = True
) -> np.ndarray:
    """Per-class AP, ``(num_classes,)`` float64 (NaN where ``npos == 0``)."""
    return np.array(
        [devkit_class_ap(detections, ground_truths, c, minoverlap, use_07_metric)[0] for c in range(num_classes)],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- #
# Seeded random inputs
# --------------------------------------------------------------------------- #
def random_case(
    rng: np.random.Generator,
    num_images: int,
    num_classes: int,
    *,
    gt_per_image: float = 2.5,
    det_per_image: float = 6.0,
    classes_used: int | None = None,
    p_difficult: float = 0.15,
    integer_grid: bool = False,
    tie_levels: int = 0,
    p_empty_dets: float = 0.1,
    p_empty_gt: float = 0.1,
    p_duplicate: float = 0.1,
    image_size: float = 500.0,
    as_torch: bool = True,
) -> tuple[list[Detections], list[GroundTruth]]:
    """Random images with ground truth and detections around it.

    ``classes_used`` < ``num_classes`` leaves classes without ground truth or
    detections; ``integer_grid`` puts boxes on a coarse integer grid (exact
    IoU ties and IoU exactly at the threshold become frequent); ``tie_levels``
    > 0 quantises scores to that many values (tied scores); duplicate boxes
    (ground truth and detections) appear with probability ``p_duplicate``.
    """
    used = num_classes if classes_used is None else classes_used
    dets, gts = [], []
    for _ in range(num_images):
        # ground truth
        g = 0 if rng.random() < p_empty_gt else int(rng.poisson(gt_per_image))
        if integer_grid:
            xy = rng.integers(0, 6, size=(g, 2)).astype(np.float64)
            wh = rng.integers(1, 5, size=(g, 2)).astype(np.float64)
        else:
            xy = rng.uniform(0, 0.7 * image_size, size=(g, 2))
            wh = rng.uniform(0.05, 0.3, size=(g, 2)) * image_size
        g_boxes = np.concatenate([xy, xy + wh], axis=1)
        g_cls = rng.integers(0, used, size=g)
        g_diff = rng.random(g) < p_difficult
        if g and rng.random() < p_duplicate:  # an exactly duplicated box, maybe with another difficult flag
            j = int(rng.integers(g))
            g_boxes = np.concatenate([g_boxes, g_boxes[j : j + 1]])
            g_cls = np.concatenate([g_cls, g_cls[j : j + 1]])
            g_diff = np.concatenate([g_diff, rng.random(1) < 0.5])

        # detections: jittered copies of ground truth (sometimes the wrong class) and clutter
        k = 0 if rng.random() < p_empty_dets else int(rng.poisson(det_per_image))
        rows, cls = [], []
        for _ in range(k):
            if len(g_boxes) and rng.random() < 0.7:
                j = int(rng.integers(len(g_boxes)))
                box = g_boxes[j].copy()
                size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                if integer_grid:
                    box = box + rng.integers(-1, 2, size=4)
                else:
                    box = box + rng.normal(0, rng.choice([0.05, 0.15, 0.3]), size=4) * size
                c = int(g_cls[j]) if rng.random() < 0.85 else int(rng.integers(used))
            else:
                if integer_grid:
                    xy = rng.integers(0, 6, size=2).astype(np.float64)
                    box = np.concatenate([xy, xy + rng.integers(1, 5, size=2)])
                else:
                    xy = rng.uniform(0, 0.7 * image_size, size=2)
                    box = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, size=2) * image_size])
                c = int(rng.integers(used))
            box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
            rows.append(box)
            cls.append(c)
        d_boxes = np.array(rows, dtype=np.float64).reshape(-1, 4)
        d_cls = np.array(cls, dtype=np.int64)
        if tie_levels:
            d_scores = rng.integers(1, tie_levels + 1, size=k) / tie_levels
        else:
            d_scores = rng.random(k)
        if k and rng.random() < p_duplicate:  # an exact duplicate detection (same box, class and score)
            j = int(rng.integers(k))
            d_boxes = np.concatenate([d_boxes, d_boxes[j : j + 1]])
            d_cls = np.concatenate([d_cls, d_cls[j : j + 1]])
            d_scores = np.concatenate([d_scores, d_scores[j : j + 1]])

        if as_torch:
            dets.append(
                Detections(
                    torch.from_numpy(d_boxes).float(), torch.from_numpy(d_scores).float(), torch.from_numpy(d_cls)
                )
            )
            gts.append(
                GroundTruth(
                    torch.from_numpy(g_boxes).float(), torch.from_numpy(g_cls).long(), torch.from_numpy(g_diff)
                )
            )
        else:
            dets.append(Detections(d_boxes, d_scores, d_cls))
            gts.append(GroundTruth(g_boxes, g_cls, g_diff))
    return dets, gts
