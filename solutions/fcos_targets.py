"""FCOS training targets: which object each location must predict, and how.

Every location of every FPN level is either matched to one ground-truth
object or marked as background.  A matched location regresses its distances
to the four sides of the object (left, top, right, bottom, divided by the
level's stride: the "deltas") and a *centerness* score that is 1 at the
object's centre and falls towards 0 near its border.

Shape shorthand (see :mod:`data_utils.conventions`): ``B`` images, ``N``
ground-truth rows per image (padded), ``L`` locations of one level.
"""

from __future__ import annotations

import math

import torch

from data_utils.conventions import BACKGROUND


def fcos_match_locations_to_gt(
    locations_per_fpn_level: dict[str, torch.Tensor],
    strides_per_fpn_level: dict[str, int],
    gt_boxes: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Assign at most one ground-truth object to every location of every level.

    A location ``(xc, yc)`` of a level with stride ``s`` matches an object when

    1. it lies strictly inside the box: ``l, t, r, b > 0`` with
       ``l = xc - x1``, ``t = yc - y1``, ``r = x2 - xc``, ``b = y2 - yc``
       (a location exactly on a border is *not* inside);
    2. ``m = max(l, t, r, b)`` is in the level's half-open size range
       ``lower <= m < upper`` with ``lower = 4 * s`` and ``upper = 8 * s``,
       except that the finest level given (smallest stride) has ``lower = 0``
       and the coarsest (largest stride) has ``upper = inf``.  With the
       course's levels: p3 ``[0, 64)``, p4 ``[64, 128)``, p5 ``[128, inf)``;
       the ranges tile ``[0, inf)``, so an object whose ``m`` is exactly 64
       is matched on p4 and never on two levels or on none;
    3. the row is a real object: its class (column 4) is ``>= 0``; padding
       rows (all ``-1``) never match.

    When several objects qualify the one with the **smallest area** wins; equal
    areas go to the object listed first in ``gt_boxes``.

    Args:
        locations_per_fpn_level: ``{level: (L, 2)}`` location centres ``(xc, yc)``.
        strides_per_fpn_level: ``{level: stride}`` for the same levels.
        gt_boxes: ``(N, 5)`` rows ``(x1, y1, x2, y2, class)`` of one image, or
            ``(B, N, 5)`` for a batch; padded with ``-1`` rows.

    Returns:
        ``{level: (L, 5)}`` for ``(N, 5)`` input or ``{level: (B, L, 5)}`` for
        ``(B, N, 5)`` input: the matched object's row for every location, or a
        ``BACKGROUND`` row ``(-1, -1, -1, -1, -1)``.  Dtype and device of
        ``gt_boxes``; the inputs are not modified.
    """
    matched_gt_boxes = {}
    ### BEGIN SOLUTION
    batched = gt_boxes.dim() == 3
    gt = gt_boxes if batched else gt_boxes.unsqueeze(0)  # (B, N, 5)
    num_images = gt.shape[0]
    levels = list(locations_per_fpn_level)
    if not levels:  # nothing to match
        return {}
    sizes = [locations_per_fpn_level[level].shape[0] for level in levels]
    strides = [float(strides_per_fpn_level[level]) for level in levels]

    # All levels are matched in one pass over their concatenated locations;
    # each location carries its own level's size range.
    locations = torch.cat([locations_per_fpn_level[level] for level in levels]).to(gt)  # (L, 2)
    lower = [0.0 if s == min(strides) else 4.0 * s for s in strides]
    upper = [math.inf if s == max(strides) else 8.0 * s for s in strides]
    lower = torch.cat([torch.full((n,), lo, dtype=gt.dtype, device=gt.device) for n, lo in zip(sizes, lower)])
    upper = torch.cat([torch.full((n,), hi, dtype=gt.dtype, device=gt.device) for n, hi in zip(sizes, upper)])

    # Rows that are padding in every image (most of the 40) cannot match: drop them.
    is_object = gt[..., 4] >= 0  # (B, N); padding rows never match
    if not bool(is_object.all()):
        used = is_object.any(dim=0)
        gt, is_object = gt[:, used], is_object[:, used]

    if gt.shape[1] == 0:
        matched = gt.new_full((num_images, locations.shape[0], 5), BACKGROUND)
    else:
        xc = locations[None, :, 0, None]  # (1, L, 1)
        yc = locations[None, :, 1, None]
        x1, y1, x2, y2 = (gt[:, None, :, k] for k in range(4))  # each (B, 1, N)
        left, top, right, bottom = xc - x1, yc - y1, x2 - xc, y2 - yc  # each (B, L, N)
        nearest = torch.minimum(torch.minimum(left, right), torch.minimum(top, bottom))
        farthest = torch.maximum(torch.maximum(left, right), torch.maximum(top, bottom))
        candidate = (nearest > 0) & (farthest >= lower[:, None]) & (farthest < upper[:, None]) & is_object[:, None, :]

        area = (x2 - x1) * (y2 - y1)  # (B, 1, N)
        cost = torch.where(candidate, area, torch.full_like(area, math.inf))  # (B, L, N)
        # min returns the first minimum: equal areas go to the earlier row.
        best_cost, best_gt = cost.min(dim=-1)  # (B, L)
        matched = torch.gather(gt, 1, best_gt[..., None].expand(-1, -1, 5))  # (B, L, 5)
        matched = torch.where(torch.isinf(best_cost)[..., None], torch.full_like(matched, BACKGROUND), matched)

    for level, per_level in zip(levels, matched.split(sizes, dim=1)):
        matched_gt_boxes[level] = per_level if batched else per_level[0]
    ### END SOLUTION
    return matched_gt_boxes


def fcos_get_deltas_from_locations(
    locations: torch.Tensor, gt_boxes: torch.Tensor, stride: float | torch.Tensor
) -> torch.Tensor:
    """Distances from each location to the four sides of its matched box.

    Args:
        locations: ``(..., 2)`` centres ``(xc, yc)``.
        gt_boxes: ``(..., 4)`` or ``(..., 5)`` matched boxes (the class column,
            if any, is ignored), broadcastable against ``locations`` (e.g.
            locations ``(L, 2)`` with boxes ``(B, L, 5)``).  A ``BACKGROUND``
            row has its four box columns equal to ``-1``.
        stride: the level's stride, a number or a tensor broadcastable to
            ``(..., 1)``.

    Returns:
        ``(..., 4)`` deltas ``(xc - x1, yc - y1, x2 - xc, y2 - yc) / stride``
        (left, top, right, bottom); background rows are ``(-1, -1, -1, -1)``.
        Inverse of :func:`fcos_apply_deltas_to_locations` for positive deltas.
    """
    deltas = None
    ### BEGIN SOLUTION
    boxes = gt_boxes[..., :4]
    ltrb = torch.cat([locations - boxes[..., :2], boxes[..., 2:] - locations], dim=-1) / stride
    background = (boxes == BACKGROUND).all(dim=-1, keepdim=True)
    deltas = torch.where(background, torch.full_like(ltrb, BACKGROUND), ltrb)
    ### END SOLUTION
    return deltas


def fcos_apply_deltas_to_locations(
    deltas: torch.Tensor, locations: torch.Tensor, stride: float | torch.Tensor
) -> torch.Tensor:
    """Turn predicted deltas back into boxes.

    Args:
        deltas: ``(..., 4)`` predicted ``(left, top, right, bottom) / stride``.
            Negative values are clamped to 0 (a box cannot have a side on the
            wrong side of its location); the caller's tensor is not modified.
        locations: ``(..., 2)`` centres ``(xc, yc)``, broadcastable against
            ``deltas``.
        stride: a number or a tensor broadcastable to ``(..., 1)``.

    Returns:
        ``(..., 4)`` XYXY boxes ``(xc - l*s, yc - t*s, xc + r*s, yc + b*s)``.
        A background row of deltas (``-1``) gives the empty box
        ``(xc, yc, xc, yc)``.
    """
    output_boxes = None
    ### BEGIN SOLUTION
    distances = deltas.clamp(min=0) * stride  # out of place: never clamp the caller's tensor
    output_boxes = torch.cat([locations - distances[..., :2], locations + distances[..., 2:]], dim=-1)
    ### END SOLUTION
    return output_boxes


def fcos_make_centerness_targets(deltas: torch.Tensor) -> torch.Tensor:
    """Centerness of each location inside its matched box.

    ``centerness = sqrt( min(l, r) / max(l, r) * min(t, b) / max(t, b) )``:
    1 at the box centre, close to 0 near a side.  Scale-free, so deltas
    divided by any stride give the same value.

    Args:
        deltas: ``(..., 4)`` ``(left, top, right, bottom)`` distances, all
            ``> 0`` for a matched location, or a background row of ``-1``.

    Returns:
        ``(...)`` centerness in ``(0, 1]``, ``-1`` for background rows.
    """
    centerness = None
    ### BEGIN SOLUTION
    left, top, right, bottom = deltas.unbind(dim=-1)
    horizontal = torch.minimum(left, right) / torch.maximum(left, right)
    vertical = torch.minimum(top, bottom) / torch.maximum(top, bottom)
    background = (deltas == BACKGROUND).all(dim=-1)
    # Background rows give (-1 / -1) = 1 above, so no NaN leaks into torch.where.
    centerness = torch.where(background, torch.full_like(left, BACKGROUND), torch.sqrt(horizontal * vertical))
    ### END SOLUTION
    return centerness
