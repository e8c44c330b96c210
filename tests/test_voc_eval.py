"""Tests of data_utils.evaluation.voc_eval (VOC mAP) and data_utils.evaluation.eval_plots.

The oracle is ``tests/devkit_oracle.py``: a literal, loop-by-loop transcription
of the devkit's VOCevaldet.m that shares no code with the implementation.  The
hand-computed cases below check the oracle itself.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils.conventions import Detections
from data_utils.evaluation.eval_plots import plot_class_ap, plot_precision_recall
from data_utils.evaluation.voc_eval import VOCEvalResult, average_precision, evaluate_detections
from data_utils.types import GroundTruth
from tests.devkit_oracle import devkit_class_ap, devkit_eval, random_case

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def make_image(gt=(), dets=()):
    """gt: [(box, cls, difficult)], dets: [(box, score, cls)] -> (Detections, GroundTruth)."""
    g_boxes = torch.tensor([b for b, _, _ in gt], dtype=torch.float32).reshape(-1, 4)
    g = GroundTruth(g_boxes, torch.tensor([c for _, c, _ in gt], dtype=torch.int64),
                    torch.tensor([d for _, _, d in gt], dtype=torch.bool))
    d_boxes = torch.tensor([b for b, _, _ in dets], dtype=torch.float32).reshape(-1, 4)
    d = Detections(d_boxes, torch.tensor([s for _, s, _ in dets], dtype=torch.float32),
                   torch.tensor([c for _, _, c in dets], dtype=torch.int64))
    return d, g


def make_case(images):
    pairs = [make_image(**img) for img in images]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def both_aps(dets, gts, num_classes=1, thr=0.5):
    """(AP07, all-point AP) per class from the implementation, checked against the oracle."""
    out = []
    for m in (True, False):
        res = evaluate_detections(dets, gts, num_classes=num_classes, iou_threshold=thr, use_07_metric=m)
        ref = devkit_eval(dets, gts, num_classes, thr, m)
        np.testing.assert_allclose(res.ap, ref, rtol=0, atol=1e-12, equal_nan=True)
        out.append(res.ap)
    return out


A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
FAR = [100.0, 100.0, 110.0, 110.0]


# --------------------------------------------------------------------------- #
# hand-computed cases: they check the oracle and the implementation
# --------------------------------------------------------------------------- #
HAND_CASES = {
    # npos 2; ranked TP, FP: rec (.5, .5), prec (1, .5)
    "tp_then_fp": ([dict(gt=[(A, 0, False), (B, 0, False)], dets=[(A, 0.9, 0), (FAR, 0.8, 0)])],
                   Fraction(6, 11), Fraction(1, 2)),
    # npos 1; ranked FP, TP: rec (0, 1), prec (0, .5)
    "fp_then_tp": ([dict(gt=[(A, 0, False)], dets=[(FAR, 0.9, 0), (A, 0.8, 0)])],
                   Fraction(1, 2), Fraction(1, 2)),
    # npos 2; TP, duplicate FP, TP: rec (.5, .5, 1), prec (1, .5, 2/3)
    "duplicate": ([dict(gt=[(A, 0, False), (B, 0, False)], dets=[(A, 0.9, 0), (A, 0.8, 0), (B, 0.7, 0)])],
                  (6 + 5 * Fraction(2, 3)) / 11, Fraction(1, 2) + Fraction(1, 2) * Fraction(2, 3)),
    # detections on a difficult box (twice) are ignored: AP 1 (as FPs it would be 1/3)
    "difficult_ignored": ([dict(gt=[(A, 0, False), (B, 0, True)], dets=[(B, 0.95, 0), (B, 0.9, 0), (A, 0.8, 0)])],
                          Fraction(1), Fraction(1)),
    # the second image has ground truth and no detection: it lowers recall (skipping it gives 1)
    "image_without_detections": ([dict(gt=[(A, 0, False)], dets=[(A, 0.9, 0)]), dict(gt=[(B, 0, False)])],
                                 Fraction(6, 11), Fraction(1, 2)),
    # IoU exactly 0.5 (inter 1, union 2) is a match: devkit's >= (py-faster-rcnn's > gives 0)
    "iou_exactly_threshold": ([dict(gt=[([0, 0, 1, 1], 0, False)], dets=[([0, 0, 2, 1], 0.9, 0)])],
                              Fraction(1), Fraction(1)),
    "iou_just_below_threshold": ([dict(gt=[([0, 0, 1, 1], 0, False)], dets=[([0, 0, 2.01, 1], 0.9, 0)])],
                                 Fraction(0), Fraction(0)),
    # the 2nd detection's best box (IoU .905) is taken, so it is an FP although
    # another box (IoU .739) is free: VOC's rule (COCO would make it a TP)
    "best_box_even_if_taken": ([dict(gt=[([0, 0, 10, 10], 0, False), ([2, 0, 12, 10], 0, False)],
                                     dets=[([0, 0, 10, 10], 0.9, 0), ([0.5, 0, 10.5, 10], 0.8, 0)])],
                               Fraction(6, 11), Fraction(1, 2)),
    # equal scores keep input order: image 0's FP ranks before image 1's TP
    "tied_scores_input_order": ([dict(gt=[(A, 0, False)], dets=[(FAR, 0.5, 0)]), dict(gt=[(B, 0, False)], dets=[(B, 0.5, 0)])],
                                Fraction(3, 11), Fraction(1, 4)),
    "tied_scores_swapped": ([dict(gt=[(B, 0, False)], dets=[(B, 0.5, 0)]), dict(gt=[(A, 0, False)], dets=[(FAR, 0.5, 0)])],
                            Fraction(6, 11), Fraction(1, 2)),
    # equal IoU with two identical boxes: the first listed wins (difficult first -> ignored -> AP 0)
    "iou_tie_first_box_difficult": ([dict(gt=[(A, 0, True), (A, 0, False)], dets=[(A, 0.9, 0)])],
                                    Fraction(0), Fraction(0)),
    "iou_tie_first_box_plain": ([dict(gt=[(A, 0, False), (A, 0, True)], dets=[(A, 0.9, 0)])],
                                Fraction(1), Fraction(1)),
    # recall exactly 3/10 does NOT reach the devkit's t(4) = 0.30000000000000004 (MATLAB's 0:0.1:1):
    # precision 1 at t = 0, 0.1, 0.2 only -> 3/11 (exact decimals t = i/10 would give 4/11)
    "recall_exactly_0.3": ([dict(gt=[([10 * i, 0, 10 * i + 5, 5], 0, False) for i in range(10)],
                                 dets=[([10 * i, 0, 10 * i + 5, 5], 0.9 - 0.1 * i, 0) for i in range(3)])],
                           Fraction(3, 11), Fraction(3, 10)),
    # ... but exactly 6/10 reaches the devkit's t(7) = 0.6 (np.arange(0, 1.1, 0.1)[6] = 0.6000000000000001 would not):
    # precision 1 up to recall 0.6 reaches t = 0, 0.1, ..., 0.6 -> 7/11 (numpy's arange would give 6/11)
    "recall_exactly_0.6": ([dict(gt=[([10 * i, 0, 10 * i + 5, 5], 0, False) for i in range(10)],
                                 dets=[([10 * i, 0, 10 * i + 5, 5], 0.9 - 0.05 * i, 0) for i in range(6)])],
                           Fraction(7, 11), Fraction(6, 10)),
    "no_detections": ([dict(gt=[(A, 0, False)])], Fraction(0), Fraction(0)),
}


@pytest.mark.parametrize("name", list(HAND_CASES))
def test_hand_computed_cases(name):
    images, ap07, ap_all = HAND_CASES[name]
    dets, gts = make_case(images)
    # the oracle alone
    assert devkit_eval(dets, gts, 1, 0.5, True)[0] == pytest.approx(float(ap07), abs=1e-12)
    assert devkit_eval(dets, gts, 1, 0.5, False)[0] == pytest.approx(float(ap_all), abs=1e-12)
    # the implementation (both_aps also compares it with the oracle)
    got07, got_all = both_aps(dets, gts)
    assert got07[0] == pytest.approx(float(ap07), abs=1e-12)
    assert got_all[0] == pytest.approx(float(ap_all), abs=1e-12)


def test_recall_thresholds_are_matlab_colon_bit_for_bit():
    """VOCevaldet.m samples recall at MATLAB's 0:0.1:1: 3*0.1 in the first half, 1 - k*0.1 in the second."""
    from data_utils.evaluation.voc_eval import RECALL_THRESHOLDS_07, matlab_colon

    assert RECALL_THRESHOLDS_07.tolist()[3] == 0.30000000000000004 != 0.3
    assert RECALL_THRESHOLDS_07.tolist()[:3] + RECALL_THRESHOLDS_07.tolist()[4:] == [0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert matlab_colon(0.0, 0.1, 1.0).tolist() != np.arange(0, 1.1, 0.1).tolist()  # numpy differs at 0.6 and 0.7
    assert matlab_colon(1.0, 1.0, 5.0).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_difficult_counts_and_sensitivity():
    dets, gts = make_case(HAND_CASES["difficult_ignored"][0])
    res = evaluate_detections(dets, gts, num_classes=1)
    assert (res.num_tp[0], res.num_fp[0], res.num_ignored[0], res.num_gt[0], res.num_difficult[0]) == (1, 0, 2, 1, 1)
    assert res.ap[0] == 1.0
    # the same detections with the difficult flag removed: now the box counts, the AP changes
    gts_plain = [GroundTruth(g.boxes, g.classes, torch.zeros_like(g.difficult)) for g in gts]
    plain = evaluate_detections(dets, gts_plain, num_classes=1)
    assert plain.num_gt[0] == 2 and plain.ap[0] != pytest.approx(1.0)
    # and with the difficult box dropped (as the course did), they become FPs: AP 1/3 all-point
    gts_dropped = [GroundTruth(g.boxes[:1], g.classes[:1], g.difficult[:1]) for g in gts]
    dropped = evaluate_detections(dets, gts_dropped, num_classes=1, use_07_metric=False)
    assert dropped.ap[0] == pytest.approx(1 / 3)


def test_image_without_detections_is_not_skipped():
    images = HAND_CASES["image_without_detections"][0]
    dets, gts = make_case(images)
    res = evaluate_detections(dets, gts, num_classes=1)
    assert res.num_gt[0] == 2 and res.recall[0][-1] == 0.5
    skipped = evaluate_detections(dets[:1], gts[:1], num_classes=1)
    assert skipped.ap[0] == 1.0 and res.ap[0] < skipped.ap[0]


def test_classes_without_gt_are_nan_and_left_out_of_the_mean():
    dets, gts = make_case([
        dict(gt=[(A, 0, False), (B, 1, True)], dets=[(A, 0.9, 0), (B, 0.8, 1), (FAR, 0.7, 2)]),
        dict(gt=[(B, 0, False)], dets=[(FAR, 0.6, 0)]),
    ])
    res = evaluate_detections(dets, gts, num_classes=4, class_names=["a", "b", "c", "d"])
    ref = devkit_eval(dets, gts, 4)
    np.testing.assert_allclose(res.ap, ref, atol=1e-12, equal_nan=True)
    assert res.ap[0] == pytest.approx(6 / 11)
    assert np.isnan(res.ap[1:]).all()  # only difficult GT / no GT with detections / nothing
    assert res.map == pytest.approx(6 / 11)
    assert list(res.num_gt) == [2, 0, 0, 0] and list(res.num_difficult) == [0, 1, 0, 0]
    assert list(res.num_detections) == [2, 1, 1, 0] and list(res.num_ignored) == [0, 1, 0, 0]
    assert np.isnan(res.recall[2]).all() and res.precision[2].tolist() == [0.0]


def test_empty_inputs():
    res = evaluate_detections([], [], num_classes=3)
    assert res.num_images == 0 and np.isnan(res.ap).all() and math.isnan(res.map)
    dets, gts = make_case([dict(gt=[(A, 1, False)]), dict()])
    res = evaluate_detections(dets, gts, num_classes=3)
    assert res.ap[1] == 0.0 and res.map == 0.0 and np.isnan(res.ap[[0, 2]]).all()


# --------------------------------------------------------------------------- #
# random cases against the literal devkit
# --------------------------------------------------------------------------- #
def test_matches_devkit_on_random_cases():
    """Exact agreement (1e-9) on seeded cases covering every corner of the protocol."""
    seen = dict(ties=0, ignored=0, no_gt_class=0, dets_no_gt_class=0, img_no_dets=0, img_no_gt=0,
                dup=0, iou_at_thr=0, nontrivial=0)
    for seed in range(160):
        rng = np.random.default_rng(seed)
        num_classes = int(rng.integers(1, 5))
        grid = seed % 3 == 0
        dets, gts = random_case(
            rng, int(rng.integers(1, 10)), num_classes,
            classes_used=max(1, num_classes - int(seed % 4 == 0)),
            integer_grid=grid, tie_levels=[0, 3, 10][(seed // 3) % 3],
            p_difficult=[0.0, 0.2, 0.5][seed % 3], p_duplicate=0.3,
            p_empty_dets=0.2, p_empty_gt=0.2, as_torch=seed % 2 == 0,
        )
        thr = [0.5, 0.5, 0.3, 0.7, 1.0][seed % 5]
        for use07 in (True, False):
            res = evaluate_detections(dets, gts, num_classes=num_classes, iou_threshold=thr, use_07_metric=use07)
            for c in range(num_classes):
                ref_ap, tp, fp = devkit_class_ap(dets, gts, c, thr, use07)
                if math.isnan(ref_ap):
                    assert math.isnan(res.ap[c]), (seed, c)
                else:
                    assert abs(res.ap[c] - ref_ap) <= 1e-9, (seed, use07, c, res.ap[c], ref_ap)
                    seen["nontrivial"] += 0.0 < ref_ap < 1.0
                assert (res.num_tp[c], res.num_fp[c]) == (sum(tp), sum(fp)), (seed, c)
                assert res.num_ignored[c] == len(tp) - sum(tp) - sum(fp)
                # the curves equal the devkit's with the ignored (all-zero) rows removed
                keep = [i for i in range(len(tp)) if tp[i] or fp[i]]
                ctp = np.cumsum(tp)[keep]
                np.testing.assert_allclose(res.precision[c], ctp / (np.arange(len(keep)) + 1), atol=1e-12)
            expected_map = np.nanmean(res.ap) if not np.isnan(res.ap).all() else math.nan
            assert res.map == pytest.approx(expected_map, nan_ok=True)
        # coverage bookkeeping (so the cases cannot silently become trivial)
        scores = [s for d in dets for s in np.asarray(d.scores).tolist()]
        seen["ties"] += len(scores) != len(set(scores))
        seen["ignored"] += int(res.num_ignored.sum())
        seen["no_gt_class"] += int((res.num_gt == 0).sum())
        seen["dets_no_gt_class"] += int(((res.num_gt == 0) & (res.num_detections > 0)).sum())
        seen["img_no_dets"] += sum(len(d.scores) == 0 for d in dets)
        seen["img_no_gt"] += sum(len(g.classes) == 0 for g in gts)
        seen["dup"] += sum(len(np.unique(np.asarray(d.boxes), axis=0)) < len(d.scores) for d in dets)
        if grid and thr == 0.5:
            res_gt = evaluate_detections(dets, gts, num_classes=num_classes, iou_threshold=0.5 + 1e-9)
            seen["iou_at_thr"] += int((res_gt.num_fp != res.num_fp).any())
    assert all(v > 0 for v in seen.values()), seen


def test_average_precision_helper():
    assert average_precision(np.array([]), np.array([])) == 0.0
    rec, prec = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert average_precision(rec, prec, True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert average_precision(rec, prec, False) == pytest.approx(0.5 + 0.5 * 2 / 3)


# --------------------------------------------------------------------------- #
# agreement with faster-coco-eval
# --------------------------------------------------------------------------- #
def _separated_case(rng, num_images=80, npos_choices=(3, 7, 9, 11, 13, 17, 19, 21, 23)):
    """Images cut into a 4x4 grid of 100-px cells, each holding at most one box,
    every detection clipped to one cell: a detection overlaps at most one box.
    Class 4 has detections but no ground truth; class 5 has nothing."""
    num_classes = 6
    cells = [(r, c) for r in range(4) for c in range(4)]
    npos = [int(rng.choice(npos_choices)) for _ in range(4)]
    occupant = {}  # (image, cell) -> class
    for cls, n in enumerate(npos):
        free = [(i, cell) for i in range(num_images) for cell in cells if (i, cell) not in occupant]
        for k in rng.choice(len(free), size=n, replace=False):
            occupant[free[k]] = cls
    dets, gts = [], []

    def in_cell(cell, box):
        x0, y0 = 100.0 * cell[1], 100.0 * cell[0]
        return np.clip(box, [x0, y0, x0, y0], [x0 + 100, y0 + 100, x0 + 100, y0 + 100])

    for i in range(num_images):
        g_rows, g_cls, d_rows, d_scores, d_cls = [], [], [], [], []
        for cell in cells:
            cls = occupant.get((i, cell))
            if cls is not None:
                xy = rng.uniform(5, 45, size=2) + 100.0 * np.array([cell[1], cell[0]])
                box = np.concatenate([xy, xy + rng.uniform(15, 50, size=2)])
                g_rows.append(box)
                g_cls.append(cls)
                for _ in range(int(rng.integers(0, 4))):  # jittered detections, some duplicates
                    size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                    jit = box + rng.normal(0, rng.choice([0.05, 0.2, 0.35]), size=4) * size
                    jit = np.array([min(jit[0], jit[2]), min(jit[1], jit[3]), max(jit[0], jit[2]), max(jit[1], jit[3])])
                    d_rows.append(in_cell(cell, jit))
                    d_scores.append(rng.uniform(0.3, 1.0))
                    d_cls.append(cls if rng.random() < 0.85 else int(rng.integers(0, 5)))
            elif rng.random() < 0.15:  # clutter
                xy = rng.uniform(0, 60, size=2) + 100.0 * np.array([cell[1], cell[0]])
                d_rows.append(in_cell(cell, np.concatenate([xy, xy + rng.uniform(10, 40, size=2)])))
                d_scores.append(rng.uniform(0.0, 0.6))
                d_cls.append(int(rng.integers(0, 5)))
        gts.append(GroundTruth(np.array(g_rows).reshape(-1, 4), np.array(g_cls, dtype=np.int64),
                               np.zeros(len(g_cls), dtype=bool)))
        dets.append(Detections(np.array(d_rows).reshape(-1, 4), np.array(d_scores), np.array(d_cls, dtype=np.int64)))
    return dets, gts, num_classes, npos


def _coco_precision(dets, gts, num_classes):
    """faster-coco-eval's interpolated precision at IoU 0.5: (101, num_classes), -1 where no GT."""
    faster_coco_eval = pytest.importorskip("faster_coco_eval")
    images, anns, results = [], [], []
    for i, (d, g) in enumerate(zip(dets, gts)):
        images.append({"id": i + 1, "width": 400, "height": 400})
        for box, cls in zip(g.boxes.tolist(), g.classes.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, s, cls in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist()):
            results.append({"image_id": i + 1, "category_id": cls + 1, "score": s,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    coco_gt = faster_coco_eval.COCO({"images": images, "annotations": anns,
                                     "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(num_classes)]})
    coco_dt = coco_gt.loadRes(results)
    ev = faster_coco_eval.COCOeval_faster(coco_gt, coco_dt, "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [10_000]
    ev.params.areaRng = [[0.0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.evaluate()
    ev.accumulate()
    precision = np.asarray(ev.eval["precision"])  # (T=1, R=101, K, A=1, M=1)
    assert precision.shape == (1, 101, num_classes, 1, 1)
    return precision[0, :, :, 0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_faster_coco_eval(seed):
    """Where COCO's protocol coincides with VOC's, the numbers must agree.

    Settings that make the protocols coincide:
    * IoU threshold 0.5 only; both match at IoU >= threshold;
    * no difficult boxes: COCO's only "ignore" is ``iscrowd``, which also
      changes the IoU (intersection over the detection's area);
    * ``maxDets`` above the detections per image and one area range covering
      everything, so COCO drops and ignores nothing;
    * each detection overlaps at most one box of its class (boxes in separate
      grid cells, detections clipped to a cell): COCO matches a detection to
      the best *still unmatched* box, VOC to the best box even if already
      taken (then FP); with a single candidate box both rules agree;
    * distinct scores: both rank by descending score, but COCO breaks ties
      image by image first, which is not always the input order;
    * ``npos`` coprime with 10, so that no recall ``k/npos`` equals a recall
      threshold ``j/100``: COCO's thresholds are ``np.linspace(0, 1, 101)``,
      ten of which sit one ulp above ``j/100`` (0.35, 0.7, ...) and would flip
      a ``>=`` at an exact recall.

    Then COCO's interpolated precision at recall ``r`` is exactly VOC's
    ``max precision at recall >= r`` (COCO makes precision monotone and takes the
    first rank with recall >= r).  Its thresholds 0, 0.1, ..., 1 are every tenth
    of its 101, so **AP07 = mean of those 11 values**, to 1e-12 (pycocotools
    divides by ``tp + fp + eps``, a relative change of ~1e-16; the C++ port
    may round differently, never by more than a few ulps).

    The all-point AP is the integral of that non-increasing step function over
    [0, 1]; COCO samples it at j/100, so it lies between the right and the left
    Riemann sums: ``mean(q[1:]) <= AP_all <= mean(q[:-1])`` (a band of width
    ``(q[0] - q[100]) / 100 <= 0.01``), again checked with 1e-12 slack.  Exact
    equality to COCO's own 101-point AP is impossible in general.
    """
    rng = np.random.default_rng(1000 + seed)
    dets, gts, num_classes, npos = _separated_case(rng)
    scores = np.concatenate([d.scores for d in dets])
    assert len(np.unique(scores)) == len(scores)
    q = _coco_precision(dets, gts, num_classes)

    res07 = evaluate_detections(dets, gts, num_classes=num_classes, use_07_metric=True)
    res_all = evaluate_detections(dets, gts, num_classes=num_classes, use_07_metric=False)
    assert list(res07.num_gt[:4]) == npos and res07.num_gt[4:].sum() == 0
    assert res07.num_detections[4] > 0  # detections of a class without GT: COCO -1, VOC NaN
    for c in range(num_classes):
        if res07.num_gt[c] == 0:
            assert np.all(q[:, c] == -1) and np.isnan(res07.ap[c]) and np.isnan(res_all.ap[c])
            continue
        assert res07.ap[c] == pytest.approx(q[::10, c].mean(), abs=1e-12), c
        lower, upper = q[1:, c].mean(), q[:-1, c].mean()
        assert lower - 1e-12 <= res_all.ap[c] <= upper + 1e-12, (c, lower, res_all.ap[c], upper)
    # the comparison is not vacuous: imperfect, distinct APs
    aps = res07.ap[:4]
    assert np.all((aps > 0.05) & (aps < 0.999)) and len(set(np.round(aps, 9))) == 4


# --------------------------------------------------------------------------- #
# input handling and validation
# --------------------------------------------------------------------------- #
def test_input_types_give_identical_results():
    rng = np.random.default_rng(7)
    dets, gts = random_case(rng, 12, 3, p_difficult=0.3, as_torch=False)
    ref = evaluate_detections(dets, gts, num_classes=3)
    variants = {
        "torch_requires_grad": (
            [Detections(torch.tensor(d.boxes, dtype=torch.float64, requires_grad=True), torch.tensor(d.scores, requires_grad=True),
                        torch.tensor(d.classes)) for d in dets],
            [GroundTruth(torch.tensor(g.boxes), torch.tensor(g.classes), torch.tensor(g.difficult)) for g in gts]),
        "lists_and_float_classes": (
            [(d.boxes.tolist(), d.scores.tolist(), [float(c) for c in d.classes]) for d in dets],
            [(g.boxes.tolist(), g.classes.tolist(), [int(x) for x in g.difficult]) for g in gts]),
        "mixed": (
            [d if i % 2 else Detections(torch.from_numpy(d.boxes), torch.from_numpy(d.scores), torch.from_numpy(d.classes))
             for i, d in enumerate(dets)], gts),
    }
    for name, (d2, g2) in variants.items():
        res = evaluate_detections(d2, g2, num_classes=3)
        np.testing.assert_array_equal(res.ap, ref.ap, err_msg=name)
        np.testing.assert_array_equal(res.num_tp, ref.num_tp, err_msg=name)


def test_large_tensor_input_equals_numpy_input():
    """Enough images for the chunked torch.cat path (> 16384 box coordinates)."""
    rng = np.random.default_rng(11)
    dets, gts = random_case(rng, 2000, 20, det_per_image=6.0, as_torch=True)
    assert sum(len(d.scores) for d in dets) * 4 > 2 * 16384  # three chunks or more
    res = evaluate_detections(dets, gts)
    as_np = evaluate_detections([Detections(*(t.numpy() for t in d)) for d in dets],
                                [GroundTruth(*(t.numpy() for t in g)) for g in gts])
    np.testing.assert_array_equal(res.ap, as_np.ap)
    np.testing.assert_array_equal(res.num_tp, as_np.num_tp)
    for a, b in zip(res.precision, as_np.precision):
        np.testing.assert_array_equal(a, b)


def test_half_precision_and_empty_images_in_tensor_lists():
    """bfloat16/float16 have no (or a narrow) numpy dtype; empty per-image tensors take another torch.cat path."""
    rng = np.random.default_rng(5)
    dets, gts = random_case(rng, 40, 3, p_empty_dets=0.3, p_empty_gt=0.3)
    for dtype in (torch.bfloat16, torch.float16):
        d2 = [Detections(d.boxes.to(dtype), d.scores.to(dtype), d.classes) for d in dets]
        g2 = [GroundTruth(g.boxes.to(dtype), g.classes, g.difficult) for g in gts]
        res = evaluate_detections(d2, g2, num_classes=3)
        ref = devkit_eval(d2, g2, 3)
        np.testing.assert_allclose(res.ap, ref, atol=1e-12, equal_nan=True)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(3)
    dets, gts = random_case(rng, 6, 2)
    before = [[t.clone() for t in d] for d in dets] + [[t.clone() for t in g] for g in gts]
    evaluate_detections(dets, gts, num_classes=2)
    after = [list(d) for d in dets] + [list(g) for g in gts]
    for x, y in zip(before, after):
        for a, b in zip(x, y):
            assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors():
    rng = np.random.default_rng(4)
    dets, gts = random_case(rng, 6, 2)
    ref = evaluate_detections(dets, gts, num_classes=2)
    cuda = evaluate_detections([Detections(*(t.cuda() for t in d)) for d in dets],
                               [GroundTruth(*(t.cuda() for t in g)) for g in gts], num_classes=2)
    np.testing.assert_array_equal(cuda.ap, ref.ap)


def _valid():
    return make_case([dict(gt=[(A, 0, False)], dets=[(A, 0.9, 0)]),
                      dict(gt=[(B, 1, True), (A, 2, False)], dets=[(B, 0.8, 1), (FAR, 0.3, 2)])])


def _set(kind, i, field, value):
    def mutate(dets, gts):
        seq = dets if kind == "d" else gts
        seq[i] = seq[i]._replace(**{field: value})
        return dets, gts
    return mutate


BAD_INPUTS = {
    "length": (lambda d, g: (d, g[:1]), "detections for 2 images but ground truth for 1"),
    "det_boxes_shape": (_set("d", 1, "boxes", torch.zeros(2, 5)), "detections[1]: boxes must have shape (2, 4)"),
    "det_scores_2d": (_set("d", 1, "scores", torch.zeros(2, 1)), "detections[1]: scores must have shape (K,)"),
    "det_scalar_fields": (lambda d, g: (d[:1] + [Detections(torch.zeros(1, 4), torch.tensor(0.5), torch.tensor(1))], g),
                          "detections[1]: scores must have shape (K,), got ()"),
    "det_classes_len": (_set("d", 1, "classes", torch.zeros(3, dtype=torch.int64)), "detections[1]: classes must have shape (2,)"),
    "det_class_too_big": (_set("d", 1, "classes", torch.tensor([1, 20])), "detections[1]: class of row 1 is 20, outside [0, 20)"),
    "det_class_negative": (_set("d", 0, "classes", torch.tensor([-1])), "detections[0]: class of row 0 is -1"),
    "det_class_fraction": (_set("d", 1, "classes", torch.tensor([1.0, 1.5])), "detections[1]: class of row 1 is 1.5, not a whole"),
    "gt_class_too_big": (_set("g", 1, "classes", torch.tensor([1, 25])), "ground_truths[1]: class of row 1 is 25"),
    "det_box_nan": (_set("d", 1, "boxes", torch.tensor([B, [0.0, float("nan"), 1.0, 1.0]])), "detections[1]: box 1 is not finite"),
    "gt_box_inf": (_set("g", 0, "boxes", torch.tensor([[0.0, 0.0, float("inf"), 1.0]])), "ground_truths[0]: box 0 is not finite"),
    "det_score_inf": (_set("d", 0, "scores", torch.tensor([float("inf")])), "detections[0]: score 0 is not finite"),
    "det_box_inverted": (_set("d", 1, "boxes", torch.tensor([B, [5.0, 0.0, 1.0, 1.0]])), "detections[1]: box 1"),
    "gt_difficult_2": (_set("g", 1, "difficult", torch.tensor([0, 2])), "ground_truths[1]: difficult flag 1 is 2"),
    "gt_difficult_len": (_set("g", 1, "difficult", torch.tensor([True])), "ground_truths[1]: difficult must have shape (2,)"),
    "record_type": (lambda d, g: (d, [g[0], {"boxes": 1}]), "ground_truths[1]: expected a record"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_invalid_inputs_name_image_and_problem(name):
    mutate, message = BAD_INPUTS[name]
    dets, gts = mutate(*_valid())
    with pytest.raises(ValueError) as err:
        evaluate_detections(dets, gts)
    assert message in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=3, class_names=["a", "b"]), "class_names has 2 names"),
    (dict(iou_threshold=0.0), "iou_threshold"),
    (dict(iou_threshold=1.5), "iou_threshold"),
])
def test_invalid_arguments(kwargs, message):
    dets, gts = make_case([dict(gt=[(A, 0, False)], dets=[(A, 0.9, 0)])])
    with pytest.raises(ValueError, match=message):
        evaluate_detections(dets, gts, **kwargs)


def test_empty_boxes_may_be_flat():
    d = Detections(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    g = GroundTruth(torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool))
    d1, g1 = make_image(gt=[(A, 0, False)], dets=[(A, 0.9, 0)])
    res = evaluate_detections([d, d1], [g, g1], num_classes=1)
    assert res.ap[0] == 1.0


# --------------------------------------------------------------------------- #
# result record
# --------------------------------------------------------------------------- #
def _small_result() -> VOCEvalResult:
    dets, gts = make_case([
        dict(gt=[(A, 0, False), (B, 1, False)], dets=[(A, 0.9, 0), (B, 0.8, 1), (FAR, 0.7, 1)]),
        dict(gt=[(B, 0, False)], dets=[(FAR, 0.6, 0), (A, 0.5, 3)]),
    ])
    return evaluate_detections(dets, gts, num_classes=4, class_names=["cat", "dog", "cow", "sheep"])


def test_default_class_names_are_voc():
    dets, gts = make_case([dict(gt=[(A, 14, False)], dets=[(A, 0.9, 14)])])
    res = evaluate_detections(dets, gts)
    assert res.class_names[0] == "aeroplane" and res.class_names[14] == "person" and len(res.class_names) == 20
    assert res.map == 1.0
    assert evaluate_detections(dets, gts, num_classes=15).class_names[14] == "class_14"


def test_table_and_dict():
    res = _small_result()
    table = res.table()
    for name in res.class_names:
        assert name in table
    assert "no GT" in table and "mAP" in table and "VOC07 11-point" in table
    assert f"{100 * res.map:.2f}" in table
    assert str(res) == table and "map=" in repr(res)
    d = res.to_dict(include_curves=True)
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN became None
    assert json.loads(text)["per_class"]["cow"]["ap"] is None
    assert d["map"] == pytest.approx(res.map)
    assert d["per_class"]["cat"]["precision"] == res.precision[0].tolist()


# --------------------------------------------------------------------------- #
# plots
# --------------------------------------------------------------------------- #
def test_precision_recall_plot(tmp_path):
    res = _small_result()
    fig = plot_precision_recall(res)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == int((res.num_gt > 0).sum()) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("cat (AP") and labels[1].startswith("dog (AP")
    fig.savefig(tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fig2 = plot_precision_recall(res, classes=["dog", 2, 0])
    assert len(fig2.axes[0].get_lines()) == 3  # a class without GT still gets its (empty) line
    with pytest.raises(ValueError, match="unknown class"):
        plot_precision_recall(res, classes=["zebra"])


def test_class_ap_plot(tmp_path):
    from matplotlib.figure import Figure

    res = _small_result()
    fig = plot_class_ap(res)
    ax = fig.axes[0]
    assert len(ax.patches) == res.num_classes
    assert len(ax.get_lines()) == 1 and ax.get_lines()[0].get_xdata()[0] == pytest.approx(res.map)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[2:] == ["cat", "dog"] and set(ticks[:2]) == {"cow", "sheep"}  # best on top, NaN at the bottom
    assert sum(t.get_text().strip() == "no GT" for t in ax.texts) == 2
    widths = [p.get_width() for p in ax.patches]
    assert widths[-1] == pytest.approx(res.ap[1]) and widths[:2] == [0.0, 0.0]
    fig.savefig(tmp_path / "ap.png")
    assert (tmp_path / "ap.png").stat().st_size > 1000
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # how Jupyter shows it, whatever the backend

    own = Figure()
    target = own.add_subplot()
    assert plot_class_ap(res, ax=target) is own


def test_plots_module_does_not_touch_pyplot_or_backend():
    code = (
        "import sys, matplotlib; raw = lambda: dict.__getitem__(matplotlib.rcParams, 'backend'); b = raw(); "
        "import data_utils.evaluation.eval_plots, data_utils.evaluation.voc_eval; "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert raw() == b; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
