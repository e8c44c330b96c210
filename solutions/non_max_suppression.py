"""Greedy non-maximum suppression, vectorised (no Python loop over boxes)."""

from __future__ import annotations

import torch

from solutions.box_ops import iou


#: Boxes resolved together in one vectorised step of :func:`nms`.
_NMS_BLOCK = 256


def _suppressed_by(kept: torch.Tensor, candidates: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``(K, M)`` bool: candidate ``m`` overlaps kept box ``k`` by more than the threshold.

    The comparison is made in float64, as torchvision's kernels do, so that an
    IoU that is exactly the threshold in rational terms is treated the same way.
    """
    return iou(kept, candidates).to(torch.float64) > iou_threshold


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy NMS: keep the best box, drop every box overlapping it by more
    than ``iou_threshold``, repeat with the best remaining box.

    Args:
        boxes: ``(N, 4)`` XYXY boxes.
        scores: ``(N,)`` scores.
        iou_threshold: a box is suppressed when its IoU with a kept,
            higher-scoring box is strictly greater than this.

    Returns:
        ``(K,)`` int64 indices into ``boxes`` of the kept boxes, by decreasing
        score, on ``boxes.device``.  Equal scores are ranked by index (the
        earlier box wins), and boxes of zero area never suppress anything, as
        in ``torchvision.ops.nms``.
    """
    keep = None
    ### BEGIN SOLUTION
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    kept = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    kept_boxes = sorted_boxes[:0]
    # Boxes are visited in blocks of _NMS_BLOCK, best first.  A block's boxes
    # are first tested against every box already kept (one IoU matrix), then
    # resolved among themselves.  Inside a block greedy NMS is the unique
    # fixed point of  kept[i] = alive[i] and not any(kept[j] and sup[j, i], j < i);
    # iterating from "all alive" reaches it in (longest chain + 1) vectorised
    # steps.  Work is O(N * K) like the classic loop, with no per-box Python.
    for start in range(0, len(order), _NMS_BLOCK):
        block = sorted_boxes[start:start + _NMS_BLOCK]
        alive = ~_suppressed_by(kept_boxes, block, iou_threshold).any(dim=0)
        sup = _suppressed_by(block, block, iou_threshold).triu_(diagonal=1) & alive[:, None]
        block_kept = alive
        while True:
            new_kept = alive & ~(sup & block_kept[:, None]).any(dim=0)
            if torch.equal(new_kept, block_kept):
                break
            block_kept = new_kept
        kept[start:start + _NMS_BLOCK] = block_kept
        kept_boxes = torch.cat([kept_boxes, block[block_kept]])
    keep = order[kept]
    ### END SOLUTION
    return keep


def class_spec_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """NMS within each class independently (boxes of different classes never
    suppress each other).

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)``; class_ids: ``(N,)`` integers.

    Returns:
        ``(K,)`` int64 indices of kept boxes, by decreasing score.
    """
    keep = None
    ### BEGIN SOLUTION
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # Shift each class to its own region of the plane so that boxes of
    # different classes cannot overlap; then one NMS call does every class.
    span = (boxes.max() - boxes.min()).clamp(min=0) + 1
    offsets = class_ids.to(boxes.dtype)[:, None] * span
    keep = nms(boxes - boxes.min() + offsets, scores, iou_threshold)
    ### END SOLUTION
    return keep
