"""Greedy non-maximum suppression, vectorised (no Python loop over boxes)."""

from __future__ import annotations

import torch

#: Boxes resolved together in one vectorised step of :func:`nms`.
_NMS_BLOCK = 256


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Greedy NMS: keep the best box, drop every box overlapping it by more
    than ``iou_threshold``, repeat with the best remaining box.

    Args:
        boxes: ``(N, 4)`` XYXY boxes, float32 or float64 (other dtypes are
            computed in float32).
        scores: ``(N,)`` scores.
        iou_threshold: in ``[0, 1]``; a box is suppressed when its IoU with a
            kept, higher-scoring box is strictly greater than this.

    Returns:
        ``(K,)`` int64 indices into ``boxes`` of the kept boxes, by decreasing
        score, on ``boxes.device``.  Equal scores are ranked by index (the
        earlier box wins), and boxes of zero area never suppress anything.
        The kept set is identical to ``torchvision.ops.nms``'s: IoU is
        computed with the same float operations in the boxes' dtype and
        compared with the threshold as that function does.
    """
    keep = None
    ### BEGIN SOLUTION
    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    # torchvision compares the float32 IoU, widened to double, with the
    # double threshold.  For a float32 IoU x, "x > thr" holds exactly when
    # "x > thr_down", thr_down being the largest float32 <= thr; comparing
    # with thr_down keeps the whole computation in the boxes' dtype.
    threshold = torch.tensor(iou_threshold, dtype=torch.float64).to(dtype)
    if threshold.item() > iou_threshold:
        threshold = torch.nextafter(threshold, torch.tensor(-float("inf"), dtype=dtype))
    threshold = threshold.item()

    def iou_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(K, M)`` IoU of boxes ``a`` and ``b`` given as ``(5, K)`` / ``(5, M)``
        columns ``x1, y1, x2, y2, area``; in place on fresh buffers (no copy of
        the inputs).  Areas are clamped at 0, so a NaN (0 / 0) can only
        appear in the column of a zero-area box, which nothing suppresses."""
        ax1, ay1, ax2, ay2, a_area = a[:, :, None].unbind(0)
        bx1, by1, bx2, by2, b_area = b[:, None, :].unbind(0)
        inter = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
        inter.mul_(torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).clamp_(min=0))
        return inter.div_((a_area + b_area).sub_(inter))  # same operation order as torchvision

    order = torch.sort(scores, descending=True, stable=True).indices
    columns = torch.empty(5, len(order), dtype=dtype, device=device)  # x1, y1, x2, y2, area by rank
    columns[:4] = boxes[order].to(dtype).t()
    torch.mul((columns[2] - columns[0]).clamp_(min=0), (columns[3] - columns[1]).clamp_(min=0), out=columns[4])
    ranks = torch.arange(len(order), device=device)
    kept_columns = torch.empty_like(columns)  # the first num_kept columns are the kept boxes
    kept_ranks = torch.empty_like(ranks)
    num_kept = 0

    # Boxes are visited in blocks of _NMS_BLOCK ranks, best first.  A block is
    # first tested against every box kept so far (one IoU matrix, reduced by
    # max over the kept boxes), and the survivors are then resolved among
    # themselves.  Inside a block, greedy NMS is the unique fixed point of
    #     kept[i] = not any(kept[j] and suppresses[j, i] for j < i),
    # and iterating it from "all kept" reaches it in (longest chain of
    # suppressions + 1) vectorised steps (one matrix-vector product each).
    # Work is O(N * K) pairs as in the classic loop, but with no per-box Python.
    for start in range(0, len(order), _NMS_BLOCK):
        block = columns[:, start:start + _NMS_BLOCK]
        block_ranks = ranks[start:start + _NMS_BLOCK]
        if num_kept > 0:
            alive = ~(iou_columns(kept_columns[:, :num_kept], block).amax(dim=0) > threshold)
            block, block_ranks = block[:, alive], block_ranks[alive]
        if block.shape[1] == 0:
            continue
        suppresses = (iou_columns(block, block) > threshold).triu_(diagonal=1).to(dtype)
        block_kept = torch.ones(block.shape[1], dtype=torch.bool, device=device)
        while True:
            new_kept = (block_kept.to(dtype) @ suppresses) == 0
            if torch.equal(new_kept, block_kept):
                break
            block_kept = new_kept
        num_new = int(block_kept.sum())
        kept_columns[:, num_kept:num_kept + num_new] = block[:, block_kept]
        kept_ranks[num_kept:num_kept + num_new] = block_ranks[block_kept]
        num_kept += num_new
    keep = order[kept_ranks[:num_kept]]
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
            Half-precision boxes are shifted and compared in float32.

    Returns:
        ``(K,)`` int64 indices of kept boxes, by decreasing score.
    """
    keep = None
    ### BEGIN SOLUTION
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # Shift each class to its own region of the plane so that boxes of
    # different classes cannot overlap; then one NMS call does every class.
    # In at least float32: in float16, class 300 of a 224 px image would be
    # shifted past 65504 (inf) and coordinates quantised to 32 px.
    boxes = boxes.to(torch.promote_types(boxes.dtype, torch.float32))  # a new tensor only for half precision
    span = (boxes.max() - boxes.min()).clamp(min=0) + 1
    offsets = class_ids.to(boxes.dtype)[:, None] * span
    keep = nms(boxes - boxes.min() + offsets, scores, iou_threshold)
    ### END SOLUTION
    return keep
