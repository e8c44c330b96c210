"""Plain records passed between the loader, the engine and the evaluator."""

from __future__ import annotations

from typing import NamedTuple

import torch


class GroundTruth(NamedTuple):
    """All annotated objects of one image, in *original image* pixels.

    boxes: ``(G, 4)`` XYXY float, continuous coordinates (a VOC box with
        1-based inclusive corners ``xmin..xmax`` becomes ``xmin - 1 .. xmax``);
    classes: ``(G,)`` int64 in ``[0, 20)``;
    difficult: ``(G,)`` bool; difficult objects are kept here so that the
        evaluation can ignore detections on them, but they are never training
        targets.
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    difficult: torch.Tensor
