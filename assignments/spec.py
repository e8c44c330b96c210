"""The two assignments: where their text lives, which functions students write
and how many points each is worth.

The *order* of the graded functions is the order of their cells in the
notebook; the build checks that the text source asks for exactly these
functions (and, when :mod:`grader.functions` is present, that the grader
grades exactly these too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
COURSE_DIR = HERE / "course"
SOURCE_DIR = COURSE_DIR / "source"
TEXT_DIR = HERE / "src"
COURSE_ID = "detection-course"
#: Student-side helper module copied next to every notebook (imports only data_utils-free code).
TOOLS_MODULE = "course_tools"


@dataclass(frozen=True)
class AssignmentSpec:
    name: str
    title: str
    #: Graded student functions/classes, in notebook order, with their points.
    points: dict[str, int]
    #: Ungraded solution cells: code reused from another assignment that the
    #: student pastes in (the two-stage detector needs the backbone, the
    #: locations and NMS from the one-stage assignment).
    reused: tuple[str, ...] = field(default=())

    @property
    def text_source(self) -> Path:
        return TEXT_DIR / f"{self.name}.md"

    @property
    def source_dir(self) -> Path:
        return SOURCE_DIR / self.name

    @property
    def notebook_name(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def functions(self) -> list[str]:
        return list(self.points)

    @property
    def total_points(self) -> int:
        """Points of the graded functions (the notebook's function cells)."""
        return sum(self.points.values())

    @property
    def overfit(self) -> dict:
        """The overfit test's rubric entry (``grader/rubric.toml``: its points and model)."""
        return overfit_rubric(self.name)

    @property
    def max_score(self) -> float:
        """The notebook's maximum on every grading path: its functions plus the overfit test.

        The mAP gate is not part of it: it runs only where VOC (or trained
        weights) and a GPU are at hand and is reported on its own line.
        """
        return self.total_points + self.overfit["points"]


ASSIGNMENTS: dict[str, AssignmentSpec] = {
    "one_stage": AssignmentSpec(
        name="one_stage",
        title="One-stage detection: FCOS",
        points={
            "DetectorBackboneWithFPN": 8,
            "get_fpn_location_coords": 6,
            "FCOSPredictionNetwork": 8,
            "fcos_match_locations_to_gt": 14,
            "fcos_get_deltas_from_locations": 6,
            "fcos_apply_deltas_to_locations": 6,
            "fcos_make_centerness_targets": 6,
            "nms": 14,
            "class_spec_nms": 6,
            "FCOS": 26,
        },
    ),
    "two_stage": AssignmentSpec(
        name="two_stage",
        title="Two-stage detection: Faster R-CNN",
        points={
            "flatten_anchor_predictions": 4,
            "RPNPredictionNetwork": 6,
            "generate_fpn_anchors": 8,
            "iou": 6,
            "rcnn_match_anchors_to_gt": 12,
            "rcnn_get_deltas_from_anchors": 6,
            "rcnn_apply_deltas_to_anchors": 6,
            "sample_rpn_training": 8,
            "RPN": 14,
            "assign_rois_to_fpn_levels": 4,
            "pool_roi_features": 8,
            "FasterRCNN": 18,
        },
        reused=("DetectorBackboneWithFPN", "get_fpn_location_coords", "nms", "class_spec_nms"),
    ),
}


def overfit_rubric(assignment: str) -> dict:
    """``[<assignment>.overfit]`` of the grader's rubric, read without importing the grader (or torch)."""
    import tomllib

    rubric = tomllib.loads((HERE.parent / "grader" / "rubric.toml").read_text())
    return rubric[assignment]["overfit"]


def check_against_grader() -> None:
    """The grader grades exactly the functions listed here, in the same order."""
    from grader.functions import DEPENDENCIES, STUDENT_FUNCTIONS

    for name, spec in ASSIGNMENTS.items():
        if STUDENT_FUNCTIONS[name] != spec.functions:
            raise ValueError(f"{name}: grader.functions.STUDENT_FUNCTIONS {STUDENT_FUNCTIONS[name]} "
                             f"!= assignments/spec.py {spec.functions}")
        if sorted(DEPENDENCIES[name]) != sorted(spec.reused):
            raise ValueError(f"{name}: grader.functions.DEPENDENCIES {DEPENDENCIES[name]} != {list(spec.reused)}")


def get(name: str) -> AssignmentSpec:
    try:
        return ASSIGNMENTS[name]
    except KeyError:
        raise SystemExit(f"unknown assignment {name!r}; choose one of {sorted(ASSIGNMENTS)}") from None
