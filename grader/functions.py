"""What students implement, per assignment, and where each reference lives.

This module is part of the grader's stable interface (the notebook builder
reads it): it imports nothing from :mod:`solutions`, so it works on a
student's machine too.

The names and their order come from the course manifest ``grader/course.toml``
(:func:`load_course`), the one place that declares them.

* :data:`STUDENT_FUNCTIONS` -- for each assignment, the ordered names (functions
  and classes) whose bodies students write, in the order the notebook shows
  them.  Each is graded on its own (one nbgrader grade cell per name).
* :data:`REFERENCE_MODULES` -- the module of :mod:`solutions` that holds the
  reference for each name.
* :data:`DEPENDENCIES` -- names an assignment uses but does not grade (the
  second assignment builds on the first one's backbone, locations and NMS).
  When a submission does not define them the grader supplies working
  versions: functions answer through the grader's oracle channel (computed in
  the grader's own process, see :mod:`grader.sandbox`), the backbone class is
  a plain RegNetX-400MF + FPN defined by the grader's harness.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

#: The course manifest: the graded names in notebook order, their points and the reused
#: names of every assignment (see its header).  The student wheel ships it beside this module.
COURSE_PATH = Path(__file__).resolve().parent / "course.toml"


def load_course() -> dict:
    """``grader/course.toml`` as a dict: ``{assignment: {"title", "reused", "functions": {name: points}}}``.

    tomllib keeps the file's order, so ``functions`` iterates in notebook order.  A fresh dict
    on every call (callers may change theirs).
    """
    with open(COURSE_PATH, "rb") as f:
        return tomllib.load(f)


_COURSE = load_course()

ASSIGNMENTS: tuple[str, ...] = tuple(_COURSE)

#: Names students implement, in notebook order.
STUDENT_FUNCTIONS: dict[str, list[str]] = {name: list(entry["functions"]) for name, entry in _COURSE.items()}

#: ``name -> module`` of the reference implementation (import path).
REFERENCE_MODULES: dict[str, str] = {
    "DetectorBackboneWithFPN": "solutions.backbone",
    "get_fpn_location_coords": "solutions.locations",
    "FCOSPredictionNetwork": "solutions.fcos_head",
    "fcos_match_locations_to_gt": "solutions.fcos_targets",
    "fcos_get_deltas_from_locations": "solutions.fcos_targets",
    "fcos_apply_deltas_to_locations": "solutions.fcos_targets",
    "fcos_make_centerness_targets": "solutions.fcos_targets",
    "nms": "solutions.non_max_suppression",
    "class_spec_nms": "solutions.non_max_suppression",
    "FCOS": "solutions.fcos",
    "flatten_anchor_predictions": "solutions.rpn",
    "RPNPredictionNetwork": "solutions.rpn",
    "generate_fpn_anchors": "solutions.anchors",
    "iou": "solutions.box_ops",
    "rcnn_match_anchors_to_gt": "solutions.rcnn_targets",
    "rcnn_get_deltas_from_anchors": "solutions.rcnn_targets",
    "rcnn_apply_deltas_to_anchors": "solutions.rcnn_targets",
    "sample_rpn_training": "solutions.rcnn_targets",
    "RPN": "solutions.rpn",
    "assign_rois_to_fpn_levels": "solutions.faster_rcnn",
    "pool_roi_features": "solutions.faster_rcnn",
    "FasterRCNN": "solutions.faster_rcnn",
}

#: Names an assignment's code uses without grading them.
DEPENDENCIES: dict[str, list[str]] = {name: list(entry["reused"]) for name, entry in _COURSE.items()}


#: Which names are classes (``nn.Module`` subclasses); the rest are functions.
CLASSES: frozenset[str] = frozenset(
    {"DetectorBackboneWithFPN", "FCOSPredictionNetwork", "FCOS", "RPNPredictionNetwork", "RPN", "FasterRCNN"}
)


def check_assignment(assignment: str) -> str:
    """Return ``assignment`` or raise ``ValueError`` naming the valid ones."""
    if assignment not in STUDENT_FUNCTIONS:
        raise ValueError(f"unknown assignment {assignment!r}; expected one of {', '.join(ASSIGNMENTS)}")
    return assignment


def reference(name: str):
    """The reference object for ``name`` (imports :mod:`solutions`: grader side only)."""
    import importlib

    return getattr(importlib.import_module(REFERENCE_MODULES[name]), name)


def all_names(assignment: str) -> list[str]:
    """Graded names followed by the dependencies of ``assignment``."""
    check_assignment(assignment)
    return STUDENT_FUNCTIONS[assignment] + DEPENDENCIES[assignment]
