"""Visible sanity checks: the same cases in the student's notebook and in the grader.

Students run them in their notebook with :func:`run_sanity`, which needs no
:mod:`solutions`: inputs and expected outputs come from a fixture file
written by :func:`export_sanity_fixtures` (``grader/fixtures/<assignment>_sanity.pt``
by default, a ``torch.save`` of plain tensors, numbers and dicts).  The
grader runs the very same cases (in its sandbox) as the visible part of each
function's checks, computing the expected values from the reference.

A case is data: a procedure spec for :mod:`grader.harness.procedures` (the harness that
calls the function or builds the module), a ``compare`` rule and, in the
fixture, the expected value.  Specs may hold ``{"__ref__": name, "args": ...}``
markers: inputs that are themselves reference outputs (e.g. the locations
given to the matching function); they are resolved when the fixture is
exported, so the fixture holds plain tensors.

Typical notebook use::

    from grader.sanity import run_sanity
    run_sanity("one_stage", "get_fpn_location_coords", get_fpn_location_coords)
    # or, for every case of every function defined so far:
    run_sanity("one_stage", "iou", globals())
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_utils.atomic import atomic_torch_save
from data_utils.conventions import FPN_STRIDES
from grader.compare import Verdict, close, compare_tree, rel_error
from grader.functions import STUDENT_FUNCTIONS, check_assignment
from grader.harness import procedures
from grader.judges import diagnose_nms, judge_indices, judge_samples, shape_tree, shape_verdict
from grader.registry import CHECK_SUITES
from grader.results import FAILED, PASSED, CheckResult

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
FIXTURE_VERSION = 1
#: What a fixture is generated from: the cases (this module) and the expected values (the reference).
FIXTURE_SOURCES = ("grader/sanity.py", "solutions/")


@dataclass
class SanityCase:
    id: str
    function: str
    title: str
    spec: dict
    compare: dict
    #: False: a notebook-only case, not among the grader's visible checks (the
    #: fixed-prediction loss cases: a hidden check grades the same computation,
    #: so grading them twice would charge one bug twice).
    graded: bool = True


def _ref(name: str, *args, select: Any = None, **kwargs) -> dict:
    """Marker: the reference's ``name(*args, **kwargs)`` (optionally indexed by ``select``)."""
    return {"__ref__": name, "args": list(args), "kwargs": kwargs, "select": select}


def _call(name: str, *args, **kwargs) -> dict:
    return {"op": "call", "name": name, "args": list(args), "kwargs": kwargs, "seed": 0}


def _randn(*shape: int, seed: int = 0) -> dict:
    return {"__randn__": list(shape), "seed": seed}


# The original course's sanity-check inputs (EECS 498/598 A4 printed these values).
_BOXES = [[10.0, 15, 100, 115, 1], [30, 20, 40, 30, 1], [120, 100, 200, 200, 1]]
_LOCATIONS = [[30.0, 40], [32, 29], [125, 150]]
_IOU_1 = [[10.0, 10, 90, 90], [20, 20, 40, 40], [60, 60, 80, 80]]
_IOU_2 = [[10.0, 10, 90, 90], [60, 60, 80, 80], [30, 30, 70, 70]]
_ANCHORS = [[20.0, 40, 80, 90], [10, 10, 50, 50], [120, 100, 200, 200]]


def _nms_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The course's NMS check: 5000 random integer boxes on a 100 px canvas."""
    g = torch.Generator().manual_seed(seed)
    boxes = (100.0 * torch.rand(5000, 4, generator=g)).round()
    boxes[:, 2] = boxes[:, 2] + boxes[:, 0] + 1.0
    boxes[:, 3] = boxes[:, 3] + boxes[:, 1] + 1.0
    scores = torch.rand(5000, generator=g)
    return boxes, scores


#: Tiny image of the fixed-prediction loss cases (64 x 96: p3 8 x 12, p4 4 x 6, p5 2 x 3).
_FIXED_HW = (64, 96)
#: Their class count: not VOC's 20, so a loss that hard-codes 20 (or 21) classes fails visibly.
_FIXED_CLASSES = 5


def _fixed_level_shapes(batch: int, channels: int) -> dict[str, tuple[int, int, int, int]]:
    return {lvl: (batch, channels, _FIXED_HW[0] // s, _FIXED_HW[1] // s) for lvl, s in FPN_STRIDES.items()}


def _fixed_gt() -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches of ground truth on the 64 x 96 image (objects for p3 and p4, padding rows)."""
    gt1 = torch.full((2, 4, 5), -1.0)
    gt1[0, :3] = torch.tensor([[4.0, 6, 92, 60, 2], [10, 10, 40, 44, 0], [50, 20, 70, 40, 4]])
    gt1[1, :1] = torch.tensor([[20.0, 8, 60, 56, 1]])
    gt2 = torch.full((2, 4, 5), -1.0)
    gt2[0, :1] = torch.tensor([[30.0, 10, 90, 50, 3]])
    gt2[1, :2] = torch.tensor([[2.0, 2, 30, 30, 1], [40, 20, 94, 62, 4]])
    return gt1, gt2


def _fixed_fcos_spec(seed: int = 7) -> dict:
    """FCOS(5, 8, [8]) whose backbone and head are replaced by fixed outputs (given
    "weights"): two training steps, so the normalizer's running average counts."""
    g = torch.Generator().manual_seed(seed)
    shapes = _fixed_level_shapes(2, 8)
    feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    cls = {k: torch.randn(2, s[2] * s[3], _FIXED_CLASSES, generator=g) * 2 - 2 for k, s in shapes.items()}
    box = {k: torch.rand(2, s[2] * s[3], 4, generator=g) * 4 for k, s in shapes.items()}
    ctr = {k: torch.randn(2, s[2] * s[3], 1, generator=g) for k, s in shapes.items()}
    images = torch.randn(2, 3, *_FIXED_HW, generator=g)
    gt1, gt2 = _fixed_gt()
    return {"op": "module", "name": "FCOS", "ctor_args": [_FIXED_CLASSES, 8, [8]], "ctor_kwargs": {"weights": None},
            "seed": 0, "stub_classes": ["DetectorBackboneWithFPN", "FCOSPredictionNetwork"],
            "replace": {"backbone": {"__harness__": "fixed_features", "feats": feats, "strides": FPN_STRIDES, "out_channels": 8},
                        "pred_net": {"__harness__": "fixed_outputs", "outputs": (cls, box, ctr)}},
            "calls": [{"method": "forward", "train": True, "args": [images, gt1]},
                      {"method": "forward", "train": True, "args": [images, gt2]}]}


def _fixed_rpn_spec(seed: int = 8, anchors: int = 3) -> dict:
    """RPN(8, [8]) with fixed head outputs; batch_size_per_image 512 exceeds the
    378 anchors per image, so every non-neutral anchor is sampled (no randomness)."""
    g = torch.Generator().manual_seed(seed)
    shapes = _fixed_level_shapes(2, 8)
    feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    obj = {k: torch.randn(2, s[2] * s[3] * anchors, generator=g) * 2 for k, s in shapes.items()}
    box = {k: torch.randn(2, s[2] * s[3] * anchors, 4, generator=g) * 0.2 for k, s in shapes.items()}
    gt1, _ = _fixed_gt()
    return {"op": "module", "name": "RPN", "ctor_args": [8, [8]], "ctor_kwargs": {"batch_size_per_image": 512}, "seed": 0,
            "stub_classes": ["RPNPredictionNetwork"],
            "replace": {"pred_net": {"__harness__": "fixed_outputs", "outputs": (obj, box)}},
            "calls": [{"method": "forward", "train": True, "args": [feats, FPN_STRIDES, gt1],
                       "kwargs": {"image_size": _FIXED_HW}}]}


def _fixed_frcnn_spec(seed: int = 9, channels: int = 4) -> dict:
    """FasterRCNN with fixed features, proposals and classifier weights, num_classes 5;
    a huge batch_size_per_image samples every RoI (no randomness)."""
    g = torch.Generator().manual_seed(seed)
    shapes = _fixed_level_shapes(2, channels)
    feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    height, width = _FIXED_HW
    proposals = []
    for n in (12, 8):  # boxes from a few pixels to most of the image
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = 6 + torch.rand(n, 2, generator=g) * torch.tensor([width * 0.9, height * 0.9])
        boxes = torch.cat([xy, xy + wh], 1)
        proposals.append(torch.minimum(boxes, torch.tensor([width, height, width, height], dtype=torch.float32)))
    scores = [torch.rand(len(p), generator=g).sort(descending=True).values for p in proposals]
    weight = torch.randn(_FIXED_CLASSES + 1, channels * 49, generator=g) * 0.2
    bias = torch.randn(_FIXED_CLASSES + 1, generator=g) * 0.5
    images = torch.randn(2, 3, *_FIXED_HW, generator=g)
    gt1, _ = _fixed_gt()
    return {"op": "module", "name": "FasterRCNN", "seed": 0,
            "ctor_args": [{"__harness__": "fixed_features", "feats": feats, "strides": FPN_STRIDES, "out_channels": channels},
                          {"__harness__": "fixed_rpn", "proposals": proposals, "scores": scores}, [channels]],
            "ctor_kwargs": {"num_classes": _FIXED_CLASSES, "batch_size_per_image": 100000},
            "replace": {"cls_pred": {"__harness__": "fixed_classifier", "weight": weight, "bias": bias}},
            "calls": [{"method": "forward", "train": True, "args": [images, gt1]}]}


#: What each loss is, for the message when its value differs.
LOSS_HINTS = {
    "loss_cls": "sigmoid focal loss on one-hot targets (all-zero rows for background), summed, divided by normalizer * B",
    "loss_box": "0.25 * L1 between predicted and target deltas, counted at matched locations only (zero at background), "
                "summed, divided by normalizer * B",
    "loss_ctr": "BCE-with-logits against the centerness targets, at matched locations only, summed, divided by normalizer * B",
    "loss_rpn_obj": "BCE-with-logits of the sampled anchors' objectness (1 foreground, 0 background), summed, "
                    "divided by batch_size_per_image * B",
    "loss_rpn_box": "L1 between predicted and target deltas of the sampled foreground anchors only, summed, "
                    "divided by batch_size_per_image * B",
    "loss_frcnn_cls": "cross-entropy over num_classes + 1 (0 = background, class c -> c + 1) of the sampled RoIs, "
                      "averaged over them",
}


def _one_stage_cases() -> list[SanityCase]:
    shapes_224 = {"p3": (2, 64, 28, 28), "p4": (2, 64, 14, 14), "p5": (2, 64, 7, 7)}
    feats_224 = {lvl: _randn(*shape, seed=i) for i, (lvl, shape) in enumerate(shapes_224.items())}
    locations_224 = _ref("get_fpn_location_coords", shapes_224, FPN_STRIDES)
    boxes, scores = _nms_inputs()
    gt_match = torch.tensor([[10.0, 15, 100, 115, 1], [30, 20, 40, 30, 7], [5, 5, 220, 210, 3],
                             [100, 120, 180, 170, 12], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]])
    gt_fcos = torch.full((2, 5, 5), -1.0)
    gt_fcos[0, :3] = torch.tensor([[10.0, 15, 100, 115, 1], [120, 100, 200, 200, 4], [30, 130, 90, 210, 11]])
    gt_fcos[1, :2] = torch.tensor([[5.0, 5, 220, 210, 3], [60, 60, 100, 120, 0]])
    cases = [
        SanityCase("DetectorBackboneWithFPN/sanity_shapes", "DetectorBackboneWithFPN",
                   "FPN feature shapes for a (2, 3, 224, 224) batch, out_channels=64",
                   {"op": "module", "name": "DetectorBackboneWithFPN", "ctor_args": [64], "ctor_kwargs": {"weights": None},
                    "seed": 0, "calls": [{"method": "forward", "args": [_randn(2, 3, 224, 224)], "no_grad": True}]},
                   {"kind": "shapes"}),
        SanityCase("get_fpn_location_coords/sanity_first_five", "get_fpn_location_coords",
                   "first five locations of each level at 224x224 (row-major, x fastest)",
                   _call("get_fpn_location_coords", shapes_224, FPN_STRIDES), {"kind": "first_rows", "rows": 5}),
        SanityCase("FCOSPredictionNetwork/sanity_shapes", "FCOSPredictionNetwork",
                   "head output shapes for FCOSPredictionNetwork(20, 64, [64, 64])",
                   {"op": "module", "name": "FCOSPredictionNetwork", "ctor_args": [20, 64, [64, 64]], "seed": 0,
                    "calls": [{"method": "forward", "args": [feats_224], "no_grad": True}]},
                   {"kind": "shapes"}),
        SanityCase("fcos_match_locations_to_gt/sanity", "fcos_match_locations_to_gt",
                   "matching four boxes (and two padding rows) to the 224x224 locations",
                   _call("fcos_match_locations_to_gt", locations_224, FPN_STRIDES, gt_match), {"kind": "allclose", "atol": 1e-6, "rtol": 0}),
        SanityCase("fcos_get_deltas_from_locations/sanity", "fcos_get_deltas_from_locations",
                   "deltas of three locations to their boxes, stride 8",
                   _call("fcos_get_deltas_from_locations", torch.tensor(_LOCATIONS), torch.tensor(_BOXES), 8),
                   {"kind": "allclose", "atol": 1e-5, "rtol": 1e-5}),
        SanityCase("fcos_get_deltas_from_locations/sanity_background", "fcos_get_deltas_from_locations",
                   "a background box gives deltas (-1, -1, -1, -1)",
                   _call("fcos_get_deltas_from_locations", torch.tensor([[100.0, 200]]), torch.full((1, 5), -1.0), 8),
                   {"kind": "allclose", "atol": 1e-6, "rtol": 0}),
        SanityCase("fcos_apply_deltas_to_locations/sanity_round_trip", "fcos_apply_deltas_to_locations",
                   "applying the deltas above gives back the boxes",
                   _call("fcos_apply_deltas_to_locations",
                         _ref("fcos_get_deltas_from_locations", torch.tensor(_LOCATIONS), torch.tensor(_BOXES), 8),
                         torch.tensor(_LOCATIONS), 8),
                   {"kind": "allclose", "atol": 1e-4, "rtol": 1e-5}),
        SanityCase("fcos_apply_deltas_to_locations/sanity_background", "fcos_apply_deltas_to_locations",
                   "background deltas (-1) give the empty box at the location",
                   _call("fcos_apply_deltas_to_locations", torch.full((1, 4), -1.0), torch.tensor([[100.0, 200]]), 8),
                   {"kind": "allclose", "atol": 1e-6, "rtol": 0}),
        SanityCase("fcos_make_centerness_targets/sanity", "fcos_make_centerness_targets",
                   "centerness of two locations and one background row",
                   _call("fcos_make_centerness_targets",
                         _ref("fcos_get_deltas_from_locations", torch.tensor(_LOCATIONS[:2] + [[100.0, 200]]),
                              torch.tensor(_BOXES[:2] + [[-1.0] * 5]), 8)),
                   {"kind": "allclose", "atol": 1e-6, "rtol": 1e-5}),
    ]
    for thr in (0.3, 0.5, 0.7):
        cases.append(SanityCase(f"nms/sanity_{int(thr * 10):02d}", "nms",
                                f"5000 random boxes, IoU threshold {thr} (same kept boxes as torchvision.ops.nms)",
                                _call("nms", boxes, scores, thr), {"kind": "index_sequence"}))
    cases += [
        SanityCase("class_spec_nms/sanity", "class_spec_nms", "boxes of different classes never suppress each other",
                   _call("class_spec_nms", torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10],
                                                         [20, 20, 30, 30], [21, 21, 30, 30], [0, 0, 9, 9]]),
                         torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), torch.tensor([0, 0, 1, 1, 1, 1]), 0.5),
                   {"kind": "index_sequence"}),
        SanityCase("FCOS/sanity_fixed_losses", "FCOS",
                   "FCOS(5, 8, [8]) losses with given features and head outputs, two training steps",
                   _fixed_fcos_spec(), {"kind": "losses", "keys": ["loss_cls", "loss_box", "loss_ctr"],
                                        "num_classes": _FIXED_CLASSES, "atol": 1e-6, "rtol": 1e-3}, graded=False),
        SanityCase("FCOS/sanity_losses", "FCOS", "FCOS(20, 64, [64, 64]) with your backbone and head: losses are finite scalars",
                   {"op": "module", "name": "FCOS", "ctor_args": [20, 64, [64, 64]], "ctor_kwargs": {"weights": None}, "seed": 0,
                    "calls": [{"method": "forward", "train": True, "args": [_randn(2, 3, 224, 224, seed=1), gt_fcos]}]},
                   {"kind": "finite_losses", "keys": ["loss_cls", "loss_box", "loss_ctr"]}),
    ]
    return cases


def _two_stage_cases() -> list[SanityCase]:
    shapes_224 = {"p3": (2, 64, 28, 28), "p4": (2, 64, 14, 14), "p5": (2, 64, 7, 7)}
    feats_224 = {lvl: _randn(*shape, seed=i) for i, (lvl, shape) in enumerate(shapes_224.items())}
    p5_locations = _ref("get_fpn_location_coords", {"p5": (1, 1, 2, 2)}, {"p5": 32})
    gt = torch.full((2, 6, 5), -1.0)
    gt[0, :3] = torch.tensor([[10.0, 15, 100, 115, 1], [120, 100, 200, 200, 4], [30, 130, 90, 210, 11]])
    gt[1, :2] = torch.tensor([[5.0, 5, 220, 210, 3], [60, 60, 100, 120, 0]])
    matched = torch.full((200, 5), -1.0)
    matched[:10] = torch.tensor([10.0, 10, 50, 50, 3])
    matched[150:] = -1e8
    pool_feats = {"p3": _randn(2, 8, 28, 28, seed=1), "p4": _randn(2, 8, 14, 14, seed=2), "p5": _randn(2, 8, 7, 7, seed=3)}
    pool_boxes = torch.tensor([[10.0, 10, 50, 60], [0, 0, 224, 224], [100, 30, 220, 140], [60, 60, 70, 75]])
    return [
        SanityCase("flatten_anchor_predictions/sanity", "flatten_anchor_predictions",
                   "(B, A*K, H, W) -> (B, H*W*A, K) on a small arange tensor",
                   _call("flatten_anchor_predictions", torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).view(2, 12, 2, 3), 4),
                   {"kind": "allclose", "atol": 0, "rtol": 0}),
        SanityCase("RPNPredictionNetwork/sanity_shapes", "RPNPredictionNetwork",
                   "RPN head output shapes at 224x224 with 3 anchors (2352 / 588 / 147 per level)",
                   {"op": "module", "name": "RPNPredictionNetwork", "ctor_args": [64, [64]], "ctor_kwargs": {"num_anchors": 3}, "seed": 0,
                    "calls": [{"method": "forward", "args": [feats_224], "no_grad": True}]},
                   {"kind": "shapes"}),
        SanityCase("generate_fpn_anchors/sanity_ratio_1", "generate_fpn_anchors",
                   "anchors of a 2x2 p5 grid, stride_scale 2, aspect ratio 1",
                   _call("generate_fpn_anchors", p5_locations, {"p5": 32}, 2, [1.0]), {"kind": "allclose", "atol": 1e-4, "rtol": 1e-5}),
        SanityCase("generate_fpn_anchors/sanity_ratio_0.5", "generate_fpn_anchors",
                   "anchors of a 2x2 p5 grid, stride_scale 2, aspect ratio 0.5 (height/width)",
                   _call("generate_fpn_anchors", p5_locations, {"p5": 32}, 2, [0.5]), {"kind": "allclose", "atol": 1e-4, "rtol": 1e-5}),
        SanityCase("iou/sanity", "iou", "IoU of three boxes with three boxes",
                   _call("iou", torch.tensor(_IOU_1), torch.tensor(_IOU_2)), {"kind": "allclose", "atol": 1e-6, "rtol": 1e-5}),
        SanityCase("rcnn_match_anchors_to_gt/sanity", "rcnn_match_anchors_to_gt",
                   "five anchors matched to three boxes (and padding), thresholds (0.3, 0.6)",
                   _call("rcnn_match_anchors_to_gt",
                         torch.tensor([[20.0, 40, 80, 90], [10, 10, 50, 50], [120, 100, 200, 200],
                                       [0, 0, 30, 30], [100, 100, 140, 140], [12, 17, 98, 110]]),
                         torch.tensor(_BOXES + [[-1.0] * 5]), (0.3, 0.6)),
                   {"kind": "allclose", "atol": 1e-5, "rtol": 0}),
        SanityCase("rcnn_get_deltas_from_anchors/sanity", "rcnn_get_deltas_from_anchors",
                   "deltas of three boxes relative to three anchors",
                   _call("rcnn_get_deltas_from_anchors", torch.tensor(_ANCHORS), torch.tensor(_BOXES)),
                   {"kind": "allclose", "atol": 1e-4, "rtol": 1e-4}),
        SanityCase("rcnn_apply_deltas_to_anchors/sanity_round_trip", "rcnn_apply_deltas_to_anchors",
                   "applying those deltas gives back the boxes",
                   _call("rcnn_apply_deltas_to_anchors", _ref("rcnn_get_deltas_from_anchors", torch.tensor(_ANCHORS), torch.tensor(_BOXES)),
                         torch.tensor(_ANCHORS)),
                   {"kind": "allclose", "atol": 1e-3, "rtol": 1e-5}),
        SanityCase("sample_rpn_training/sanity_counts", "sample_rpn_training",
                   "10 foreground, 140 background, 50 neutral anchors; 32 samples, 50% foreground",
                   _call("sample_rpn_training", matched, 32, 0.5), {"kind": "sample_counts"}),
        SanityCase("RPN/sanity_fixed_losses", "RPN", "RPN(8, [8]) losses with given head outputs (every anchor sampled)",
                   _fixed_rpn_spec(), {"kind": "losses", "keys": ["loss_rpn_obj", "loss_rpn_box"], "atol": 1e-6, "rtol": 1e-3},
                   graded=False),
        SanityCase("RPN/sanity_forward", "RPN", "RPN(64, [64]) with ground truth: proposals and finite losses",
                   {"op": "module", "name": "RPN", "ctor_args": [64, [64]], "seed": 0,
                    "calls": [{"method": "forward", "train": True, "args": [feats_224, FPN_STRIDES, gt], "kwargs": {"image_size": (224, 224)}}]},
                   {"kind": "rpn_forward", "keys": ["loss_rpn_obj", "loss_rpn_box"], "post_nms_topk": 100}),
        SanityCase("assign_rois_to_fpn_levels/sanity", "assign_rois_to_fpn_levels", "FPN levels of boxes of sides 20 to 300 px",
                   _call("assign_rois_to_fpn_levels", torch.tensor([[0.0, 0, 20, 20], [0, 0, 64, 64], [0, 0, 90, 90], [0, 0, 92, 92],
                                                                     [0, 0, 128, 128], [0, 0, 180, 180], [0, 0, 182, 182],
                                                                     [0, 0, 300, 300], [5, 5, 5, 5]])),
                   {"kind": "allclose", "atol": 0, "rtol": 0}),
        SanityCase("pool_roi_features/sanity", "pool_roi_features", "RoIAlign of four boxes from the right levels, in the boxes' order",
                   _call("pool_roi_features", pool_feats, FPN_STRIDES, torch.tensor([0, 1, 0, 1]), pool_boxes),
                   {"kind": "allclose", "atol": 1e-5, "rtol": 1e-4, "diagnose": "row_order"}),
        SanityCase("FasterRCNN/sanity_fixed_losses", "FasterRCNN",
                   "classification loss with given features, proposals and classifier weights, 5 classes",
                   _fixed_frcnn_spec(), {"kind": "losses", "keys": ["loss_cls"], "num_classes": _FIXED_CLASSES,
                                         "hints": {"loss_cls": "loss_frcnn_cls"}, "atol": 1e-6, "rtol": 1e-3},
                   graded=False),
        SanityCase("FasterRCNN/sanity_losses", "FasterRCNN", "Faster R-CNN with your backbone and RPN: losses are finite scalars",
                   {"op": "module", "name": "FasterRCNN", "seed": 0,
                    "ctor_args": [{"__class__": "DetectorBackboneWithFPN", "args": [64], "kwargs": {"weights": None}},
                                  {"__class__": "RPN", "args": [64, [64]]}, [64]],
                    "ctor_kwargs": {"num_classes": 20, "batch_size_per_image": 32},
                    "calls": [{"method": "forward", "train": True, "args": [_randn(2, 3, 224, 224, seed=1), gt]}]},
                   {"kind": "finite_losses", "keys": ["loss_rpn_obj", "loss_rpn_box", "loss_cls"]}),
    ]


def sanity_cases(assignment: str) -> list[SanityCase]:
    """The visible cases of ``assignment`` (specs may hold ``__ref__`` markers)."""
    check_assignment(assignment)
    return _one_stage_cases() if assignment == "one_stage" else _two_stage_cases()


# ---------------------------------------------------------------------------
# Reference side: resolve markers, compute expected values, export fixtures
# ---------------------------------------------------------------------------


def resolve_refs(obj):
    """Replace ``__ref__`` markers by the reference's outputs (needs :mod:`solutions`)."""
    if isinstance(obj, dict):
        if "__ref__" in obj:
            from grader.functions import reference

            value = reference(obj["__ref__"])(*resolve_refs(obj["args"]), **resolve_refs(obj["kwargs"]))
            if obj.get("select") is not None:
                value = value[obj["select"]]
            return value
        return {k: resolve_refs(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_refs(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(resolve_refs(v) for v in obj)
    return obj


def resolved_case(case: SanityCase) -> SanityCase:
    return SanityCase(case.id, case.function, case.title, resolve_refs(copy.deepcopy(case.spec)), case.compare,
                      case.graded)


def expected_value(assignment: str, case: SanityCase):
    from grader.checks import run_reference

    value = run_reference(assignment, case.spec)
    if case.compare["kind"] == "shapes":
        return shape_tree(value.get("outputs", value.get("output")))
    if case.compare["kind"] == "losses":  # only the compared losses: keeps the fixture small
        return {"outputs": [{k: out[k] for k in case.compare["keys"]} for out in value["outputs"]]}
    return {k: v for k, v in value.items() if k in ("output", "outputs")}


def export_sanity_fixtures(assignment: str, path: str | os.PathLike | None = None,
                           provenance: dict | None = None) -> Path:
    """Write the visible cases of ``assignment`` with their expected values (from the reference).

    The file also says what it was generated from and how to regenerate it (``provenance``, the
    builder's mark; by default this function's own command line)."""
    path = Path(path) if path is not None else FIXTURE_DIR / f"{assignment}_sanity.pt"
    if provenance is None:
        provenance = {"generated_from": list(FIXTURE_SOURCES), "regenerate_with": f"python -m grader export-sanity {assignment}",
                      "note": "generated file: edit the sources and rebuild, do not edit this file"}
    cases = []
    for case in sanity_cases(assignment):
        case = resolved_case(case)
        cases.append({"id": case.id, "function": case.function, "title": case.title, "spec": case.spec,
                      "compare": case.compare, "expected": expected_value(assignment, case)})
    return atomic_torch_save({"version": FIXTURE_VERSION, "assignment": assignment, "provenance": dict(provenance),
                              "cases": cases}, path)


def load_fixtures(assignment: str, path: str | os.PathLike | None = None) -> dict:
    path = Path(path) if path is not None else Path(os.environ.get("GRADER_SANITY_DIR", FIXTURE_DIR)) / f"{assignment}_sanity.pt"
    if not path.exists():
        raise FileNotFoundError(f"sanity fixtures not found at {path}; the instructor creates them with "
                                f"`python -m grader export-sanity {assignment}`")
    data = torch.load(path, weights_only=True)
    if data.get("assignment") != assignment:
        raise ValueError(f"{path} holds the fixtures of {data.get('assignment')!r}, not {assignment!r}")
    return data


# ---------------------------------------------------------------------------
# Judging (shared by the notebook and the grader)
# ---------------------------------------------------------------------------


def _finite_losses(losses, keys: list[str]) -> Verdict:
    if not isinstance(losses, dict):
        return Verdict(False, f"the training forward must return a dict of losses, got {type(losses).__name__}")
    for key in keys:
        if key not in losses:
            return Verdict(False, f"missing loss {key!r} (got keys {sorted(losses)})")
        value = losses[key]
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            return Verdict(False, f"{key} must be a scalar tensor, got {type(value).__name__}")
        if not math.isfinite(float(value)):
            return Verdict(False, f"{key} is {float(value)}: it must be finite")
    return Verdict(True)


def _compare_losses(outputs, expected, compare: dict) -> Verdict:
    """Loss values of each training step against the reference's (``expected``: the
    reference's list of loss dicts, one per call)."""
    keys, hints = compare["keys"], compare.get("hints", {})
    atol, rtol = compare.get("atol", 1e-6), compare.get("rtol", 1e-3)
    worst = 0.0
    for step, (out, exp) in enumerate(zip(outputs, expected)):
        verdict = _finite_losses(out, keys)
        if not verdict.passed:
            return verdict
        for key in keys:
            value, want = float(out[key]), float(exp[key])
            err = abs(value - want) / max(abs(value) + abs(want), 1e-12)
            worst = max(worst, err)
            if abs(value - want) > atol + rtol * abs(want):
                if step > 0 and all(abs(float(outputs[0][k]) - float(expected[0][k])) <= atol + rtol * abs(float(expected[0][k]))
                                    for k in keys):
                    return Verdict(False, f"step {step + 1}: {key} = {value:.6g}, expected {want:.6g} (rel error {err:.1e}), "
                                          "though step 1 is right: the normalizer is a running average, 0.9 * old + 0.1 * "
                                          "(matched locations per image), starting at 150, updated in training mode",
                                   rel_error=err)
                hint = LOSS_HINTS.get(hints.get(key, key), "")
                return Verdict(False, f"step {step + 1}: {key} = {value:.6g}, expected {want:.6g} (rel error {err:.1e}): "
                                      f"{hint}", rel_error=err)
    return Verdict(True, rel_error=worst)


#: What a passing check that compares no value says instead of a relative error.
PASS_TEXT = {"shapes": "shapes match", "finite_losses": "losses are finite scalars",
             "rpn_forward": "proposals well formed, losses finite", "index_sequence": "same boxes kept, same order",
             "sample_counts": "counts right, indices valid"}


def error_hint(compare: dict, error_type: str | None, error: str | None) -> str:
    """An extra sentence for a case whose procedure raised: a class count hard-coded to
    VOC's (the fixed-loss cases use ``compare["num_classes"]`` classes, not 20)."""
    num_classes = compare.get("num_classes")
    text = f"{error_type}: {error}"
    if num_classes is None or num_classes in (20, 21):
        return ""
    if re.search(r"\b2[01]\b", text) and re.search(r"size|shape|match|index|bounds|Target", text, flags=re.I):
        return (f" -- this check builds the model with num_classes={num_classes}, and the error mentions 20 or 21: "
                "your code seems to assume the 20 VOC classes; use self.num_classes")
    return ""


def judge_case(case: dict | SanityCase, value: dict, expected) -> Verdict:
    """Compare the value a procedure returned with the expected value."""
    compare = case["compare"] if isinstance(case, dict) else case.compare
    kind = compare["kind"]
    try:
        if kind == "shapes":
            return shape_verdict(value.get("outputs", value.get("output")), expected, "output")
        if kind == "finite_losses":
            return _finite_losses(value["outputs"][0], compare["keys"])
        if kind == "losses":
            return _compare_losses(value["outputs"], expected["outputs"], compare)
        if kind == "rpn_forward":
            out = value["outputs"][0]
            verdict = _finite_losses(out, compare["keys"])
            if not verdict.passed:
                return verdict
            proposals = out.get("proposals")
            if not isinstance(proposals, (list, tuple)) or len(proposals) != 2:
                return Verdict(False, "'proposals' must be a list with one (P, 4) tensor per image")
            for p in proposals:
                if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[1] != 4 or p.shape[0] > compare["post_nms_topk"]:
                    return Verdict(False, f"each proposals tensor must be (P, 4) with P <= {compare['post_nms_topk']}")
            return Verdict(True)
        out, ref = value["output"], expected["output"]
        if kind == "allclose":
            verdict = compare_tree(out, ref, atol=compare.get("atol", 1e-5), rtol=compare.get("rtol", 1e-4))
            if not verdict.passed and compare.get("diagnose") == "row_order" and _rows_permuted(out, ref):
                return Verdict(False, "the pooled features are right but in another order (e.g. grouped by FPN level): row i "
                                      "of the output must be RoI i's features (the course's bug that trained the classifier on "
                                      "wrong labels)", rel_error=verdict.rel_error)
            return verdict
        if kind == "first_rows":
            rows = compare["rows"]
            if not isinstance(out, dict):
                return Verdict(False, f"expected a dict {{level: (H*W, 2)}}, got {type(out).__name__}")
            worst = 0.0
            for level, r in ref.items():
                o = out.get(level)
                if not isinstance(o, torch.Tensor):
                    return Verdict(False, f"output[{level!r}] missing or not a tensor")
                if o.shape != r.shape:
                    return Verdict(False, f"output[{level!r}]: shape {tuple(o.shape)}, expected {tuple(r.shape)}")
                if close(o[:rows].flip(-1), r[:rows]) and not close(o[:rows], r[:rows]):
                    # On a square grid a transposed order and swapped columns look the same.
                    return Verdict(False, f"output[{level!r}]: your locations look transposed (or x and y swapped): "
                                          "each row is (xc, yc) and x must vary fastest (row-major order)")
                worst = max(worst, rel_error(o[:rows], r[:rows]))
                if not close(o[:rows], r[:rows]):
                    return Verdict(False, f"output[{level!r}]: first {rows} locations differ (rel error {worst:.1e}); "
                                          "expected stride * (col + 0.5), stride * (row + 0.5)", rel_error=worst)
            return Verdict(True, rel_error=worst)
        if kind == "index_sequence":
            verdict = judge_indices(out, ref)
            spec = case["spec"] if isinstance(case, dict) else case.spec
            if not verdict.passed and spec.get("name") == "nms":
                message = diagnose_nms(out, *spec["args"][:3])
                if message:
                    return Verdict(False, message)
            return verdict
        if kind == "sample_counts":
            spec = case["spec"] if isinstance(case, dict) else case.spec
            return judge_samples(out, ref, spec["args"][0])
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        return Verdict(False, f"unexpected output structure ({type(error).__name__}: {error})")
    raise ValueError(f"unknown compare kind {kind!r}")


def _rows_permuted(out, ref) -> bool:
    """``out`` holds the rows of ``ref`` (first dimension) in another order."""
    if not isinstance(out, torch.Tensor) or not isinstance(ref, torch.Tensor) or out.shape != ref.shape or out.dim() == 0:
        return False
    o, r = out.reshape(len(out), -1).double(), ref.reshape(len(ref), -1).double()
    if len(o) < 2 or not bool(torch.isfinite(o).all()):
        return False
    distance = torch.cdist(o, r)  # (rows, rows)
    match = distance.argmin(dim=1)
    tol = 1e-4 * (1 + float(r.abs().max()))
    found = bool((distance.gather(1, match[:, None]) <= tol * o.shape[1] ** 0.5).all())
    return found and sorted(match.tolist()) == list(range(len(r))) and match.tolist() != list(range(len(r)))


# ---------------------------------------------------------------------------
# In the student's notebook
# ---------------------------------------------------------------------------


def _format(result: CheckResult, rel: float | None, kind: str = "") -> str:
    if result.passed:
        # A relative error only where a value was compared (shape checks compare none).
        tail = f"rel error {rel:.1e} — looks good" if rel is not None else f"{PASS_TEXT.get(kind, 'matches')} — looks good"
        return f"  [pass] {result.title}: {tail}"
    return f"  [FAIL] {result.title}: {result.message}"


def run_sanity(assignment: str, name: str, fn_or_namespace: Callable | dict, fixture_path: str | os.PathLike | None = None,
               verbose: bool = True) -> list[CheckResult]:
    """Run the visible checks of ``name`` on the student's code, in this process.

    ``fn_or_namespace``: the function/class itself, or a namespace such as
    ``globals()`` (needed when the function calls others of the notebook).
    Prints one line per case (the relative error where a value is compared)
    and returns the results (each line also in ``result.output``; see
    :func:`print_results`); never raises for a wrong answer.
    """
    check_assignment(assignment)
    if name not in STUDENT_FUNCTIONS[assignment]:
        raise ValueError(f"{name!r} is not a function of {assignment}: {STUDENT_FUNCTIONS[assignment]}")
    data = load_fixtures(assignment, fixture_path)
    if isinstance(fn_or_namespace, dict):
        namespace = dict(fn_or_namespace)
    else:
        namespace = {name: fn_or_namespace}
    results = []
    for case in (c for c in data["cases"] if c["function"] == name):
        record = procedures.run_procedure(namespace, copy.deepcopy(case["spec"]))
        result = CheckResult(case["id"], name, case["title"], True, 0.0)
        rel = None
        if not record.get("ok"):
            result.status = FAILED
            result.message = f"{record.get('error_type')}: {record.get('error')}" + \
                error_hint(case["compare"], record.get("error_type"), record.get("error"))
        else:
            verdict = judge_case(case, record["value"], case["expected"])
            rel = verdict.rel_error
            result.status = PASSED if verdict.passed else FAILED
            result.message = verdict.message
        result.output = _format(result, rel, case["compare"]["kind"])
        results.append(result)
        if verbose:
            print(result.output)
    if verbose and not results:
        print(f"  (no sanity cases for {name})")
    return results


def print_results(results: list[CheckResult]) -> None:
    """Print the lines :func:`run_sanity` would have printed with ``verbose=True``."""
    for result in results:
        print(result.output)
    if not results:
        print("  (no sanity cases)")


def sanity_checks(assignment: str) -> list:
    """The visible cases as grader checks (expected values from the reference): a list of
    :class:`grader.checks.Check` (imported here: students' copies of this module have no checks)."""
    from grader.checks import Check, Job

    checks = []
    for case in (c for c in sanity_cases(assignment) if c.graded):
        def make(case=case):
            resolved = resolved_case(case)
            expected = expected_value(assignment, resolved)
            return Job([resolved.spec], lambda values: judge_case(resolved, values[0], expected))

        checks.append(Check(case.id, case.function, case.title, True, make))
    return checks


@CHECK_SUITES.register("one_stage/visible")
def one_stage_visible_checks() -> list:
    return sanity_checks("one_stage")


@CHECK_SUITES.register("two_stage/visible")
def two_stage_visible_checks() -> list:
    return sanity_checks("two_stage")
