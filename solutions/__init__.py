"""Reference implementations of every function the students write.

Each reference body sits between nbgrader's ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines: the assignment notebooks are generated from these
modules, so each function is written exactly once.  See
:mod:`data_utils.conventions` for shapes, coordinate conventions and sentinels.

Everything a student writes is importable from here directly, e.g.
``from solutions import fcos_match_locations_to_gt``.
"""

from data_utils.conventions import BACKGROUND, FPN_STRIDES, IMAGE_SIZE, NEUTRAL, PADDING, Detections
from solutions.anchors import generate_fpn_anchors
from solutions.backbone import DetectorBackboneWithFPN
from solutions.box_ops import box_area, iou
from solutions.faster_rcnn import FasterRCNN, assign_rois_to_fpn_levels, build_faster_rcnn, pool_roi_features
from solutions.fcos import FCOS
from solutions.fcos_head import FCOSPredictionNetwork
from solutions.fcos_targets import (
    fcos_apply_deltas_to_locations,
    fcos_get_deltas_from_locations,
    fcos_make_centerness_targets,
    fcos_match_locations_to_gt,
)
from solutions.locations import get_fpn_location_coords
from solutions.non_max_suppression import class_spec_nms, nms
from solutions.rcnn_targets import (
    rcnn_apply_deltas_to_anchors,
    rcnn_get_deltas_from_anchors,
    rcnn_match_anchors_to_gt,
    sample_rpn_training,
)
from solutions.rpn import RPN, RPNPredictionNetwork

__all__ = [
    # conventions
    "BACKGROUND", "Detections", "FPN_STRIDES", "IMAGE_SIZE", "NEUTRAL", "PADDING",
    # shared pieces
    "DetectorBackboneWithFPN", "get_fpn_location_coords", "box_area", "iou", "nms", "class_spec_nms",
    # one-stage (FCOS)
    "FCOSPredictionNetwork", "fcos_match_locations_to_gt", "fcos_get_deltas_from_locations",
    "fcos_apply_deltas_to_locations", "fcos_make_centerness_targets", "FCOS",
    # two-stage (Faster R-CNN)
    "RPNPredictionNetwork", "generate_fpn_anchors", "rcnn_match_anchors_to_gt", "rcnn_get_deltas_from_anchors",
    "rcnn_apply_deltas_to_anchors", "sample_rpn_training", "RPN", "assign_rois_to_fpn_levels",
    "pool_roi_features", "FasterRCNN", "build_faster_rcnn",
]
