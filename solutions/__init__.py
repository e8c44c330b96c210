"""Reference implementations of every function the students write.

Each reference body sits between nbgrader's ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines: the assignment notebooks are generated from these
modules, so each function is written exactly once.  See
:mod:`solutions.conventions` for shapes, coordinate conventions and sentinels.
"""

from solutions.backbone import DetectorBackboneWithFPN
from solutions.box_ops import box_area, iou
from solutions.conventions import BACKGROUND, FPN_STRIDES, IMAGE_SIZE, NEUTRAL, PADDING, Detections
from solutions.locations import get_fpn_location_coords
from solutions.non_max_suppression import class_spec_nms, nms

__all__ = [
    "BACKGROUND", "Detections", "FPN_STRIDES", "IMAGE_SIZE", "NEUTRAL", "PADDING",
    "DetectorBackboneWithFPN", "box_area", "iou", "get_fpn_location_coords",
    "nms", "class_spec_nms",
]
