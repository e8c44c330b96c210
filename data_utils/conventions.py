"""Conventions shared by every reference function (read this first).

Shape shorthand used in docstrings and comments
-----------------------------------------------
B   images in a batch                 N   ground-truth rows per image (padded, 40 by default)
H,W height/width of one FPN level     L   locations of one level, L = H*W
A   anchors per location              K   detections kept for one image
C   number of object classes (20 for VOC; background is *not* one of them
    except in the second stage's classifier, where index 0 is background)

Coordinates
-----------
Boxes are XYXY in absolute, continuous pixel coordinates of the network
input (0..224 for a 224x224 image): ``x1 < x2`` and ``y1 < y2``; a box's width
is ``x2 - x1`` (no "+1" pixel convention).  Locations are ``(xc, yc)``.

Ordering
--------
Locations and anchors are ordered row-major with **x varying fastest** and the
``A`` anchors of one location contiguous.  That is exactly the order produced by
flattening a ``(B, C, H, W)`` feature map to ``(B, H*W, C)``, so prediction
``i`` of a level always belongs to location/anchor ``i``.

Sentinels
---------
``gt_boxes`` rows are ``(x1, y1, x2, y2, class)`` padded with ``PADDING`` (-1)
rows.  Matching returns ``BACKGROUND`` (-1) rows for locations/anchors matched
to nothing and ``NEUTRAL`` (-1e8) rows for anchors that must be ignored.

Every reference function is device- and dtype-agnostic, never modifies its
inputs and returns correctly shaped empty tensors for empty inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Value filling the unused rows of ``gt_boxes`` (all five columns).
PADDING: float = -1.0
#: Value of every column of a matched row that means "background".
BACKGROUND: float = -1.0
#: Value of every column of a matched row that means "ignore" (R-CNN only).
NEUTRAL: float = -1e8
#: Side of the square network input the course uses.
IMAGE_SIZE: int = 224
#: FPN levels used by both detectors and their strides.
FPN_STRIDES: dict[str, int] = {"p3": 8, "p4": 16, "p5": 32}


class Detections(NamedTuple):
    """Detections of one image (``K`` boxes), in input-image pixels unless said otherwise.

    boxes: ``(K, 4)`` XYXY float; scores: ``(K,)`` float in [0, 1];
    classes: ``(K,)`` int64 in ``[0, C)`` (object classes, no background).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


# Detector protocol (what the training engine and the evaluator rely on; both
# FCOS and FasterRCNN follow it):
#   model.train(); losses = model(images, gt_boxes)
#       images (B, 3, H, W) float, gt_boxes (B, N, 5) padded with PADDING;
#       returns dict[str, scalar Tensor] whose "loss_*" entries are summed
#       into the training objective (other entries are only logged).
#   model.eval(); model.inference(images, score_thresh=..., nms_thresh=...)
#       returns list[Detections], one per image, in input-image pixels.
