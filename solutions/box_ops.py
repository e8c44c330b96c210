"""Box geometry shared by both detectors."""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` XYXY boxes -> ``(...)`` areas (0 for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair of boxes.

    Args:
        boxes1: ``(M, 4)`` XYXY boxes.
        boxes2: ``(N, 4)`` XYXY boxes (same dtype and device).

    Returns:
        ``(M, N)`` tensor, ``out[i, j] = IoU(boxes1[i], boxes2[j])`` in [0, 1],
        in the boxes' dtype.  A pair whose union is empty (two zero-area boxes)
        has IoU 0, not NaN.  Half-precision boxes are computed in float32 (an
        area of 200 x 200 px overflows float16) and the result cast back.
    """
    iou_matrix = None
    ### BEGIN SOLUTION
    out_dtype = boxes1.dtype
    # Areas reach 224^2 ~ 5e4, near float16's largest value (65504): compute in at least float32.
    work = torch.promote_types(out_dtype, torch.float32) if out_dtype.is_floating_point else torch.float32
    boxes1, boxes2 = boxes1.to(work), boxes2.to(work)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (M, N, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:4], boxes2[None, :, 2:4])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # (M, N)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    iou_matrix = torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))
    iou_matrix = iou_matrix.to(out_dtype) if out_dtype.is_floating_point else iou_matrix
    ### END SOLUTION
    return iou_matrix
