"""Training targets shared by both stages of Faster R-CNN: matching, box deltas, sampling.

"Anchors" below means the RPN's anchors in the first stage and the RoIs
(proposals plus ground truth) in the second; the functions do not care.

Matched rows have five columns ``(x1, y1, x2, y2, class)``:

* a ground-truth row (the anchor is **foreground**),
* all ``BACKGROUND`` (-1): the anchor is background,
* all ``NEUTRAL`` (-1e8): the anchor is ignored by the losses.
"""

from __future__ import annotations

import math

import torch

from data_utils.conventions import BACKGROUND, IMAGE_SIZE, NEUTRAL
from solutions.box_ops import iou

#: Largest log-scale change ``dw``/``dh`` that :func:`rcnn_apply_deltas_to_anchors`
#: applies: a box can grow at most 224/8 = 28 times its anchor's size, which keeps
#: ``exp`` finite for any prediction (an untrained head can output anything).
MAX_LOG_SCALE: float = math.log(IMAGE_SIZE / 8)


def _iou_per_image(anchors: torch.Tensor, gt_xyxy: torch.Tensor) -> torch.Tensor:
    """IoU of every anchor with every ground-truth box *of the same image* (given).

    Args:
        anchors: ``(A, 4)`` shared by every image, or ``(B, A, 4)`` one set per image.
        gt_xyxy: ``(B, N, 4)``.

    Returns:
        ``(B, A, N)``.  Built from :func:`solutions.box_ops.iou`: shared anchors
        need one ``(A, B*N)`` matrix; per-image anchors compute the ``(B*A, B*N)``
        matrix and keep its diagonal blocks (``B`` times more work than needed,
        which is negligible for a few hundred RoIs per image and avoids a loop).
    """
    num_images, num_gt = gt_xyxy.shape[:2]
    if anchors.dim() == 2:
        overlaps = iou(anchors, gt_xyxy.reshape(-1, 4))  # (A, B*N)
        return overlaps.view(-1, num_images, num_gt).permute(1, 0, 2)
    num_anchors = anchors.shape[1]
    overlaps = iou(anchors.reshape(-1, 4), gt_xyxy.reshape(-1, 4))
    overlaps = overlaps.view(num_images, num_anchors, num_images, num_gt)
    return overlaps.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (B, A, N)


def rcnn_match_anchors_to_gt(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    iou_thresholds: tuple[float, float],
    force_best_match: bool = False,
) -> torch.Tensor:
    """Give every anchor a ground-truth box, "background" or "neutral".

    With ``(low, high) = iou_thresholds`` and ``q`` the anchor's largest IoU
    with a (non-padding) ground-truth box of its image:

    * ``q >= high``: foreground, matched to that box (ties: the first such box);
    * ``low < q < high``: neutral (``NEUTRAL`` row);
    * ``q <= low``: background (``BACKGROUND`` row).

    Both boundaries are inclusive as written: IoU exactly ``low`` is background,
    exactly ``high`` is foreground; with ``low == high`` (the second stage's
    (0.5, 0.5)) there is no neutral band and exactly ``high`` is foreground.
    Comparisons are made in the boxes' dtype.

    ``force_best_match`` (the Faster R-CNN paper's second positive rule, used
    by the RPN): for each ground-truth box, the anchor(s) with the largest
    IoU with it become foreground too, whatever that IoU (as long as it is
    > 0), matched to that box.  All tied anchors count: for an object smaller
    than the anchors, every anchor of the best shape that contains it has the
    same IoU (object area / anchor area), so it gets several.  Without it, an object smaller than every anchor
    (a 20 px bird against 64 px anchors, IoU 0.1) has no positive anchor at
    all and the RPN learns to call it background.  An anchor that is already
    foreground keeps its ordinary match; an anchor that is the best for several
    boxes goes to the one it overlaps most.

    Args:
        anchors: ``(A, 4)`` XYXY, shared by every image, or ``(B, A, 4)``.
        gt_boxes: ``(N, 5)`` or ``(B, N, 5)`` rows ``(x1, y1, x2, y2, class)``;
            rows whose class is negative (``PADDING``) are ignored.
        iou_thresholds: ``(low, high)`` with ``low <= high``.
        force_best_match: see above.

    Returns:
        ``(A, 5)`` when both inputs are unbatched, else ``(B, A, 5)``: the
        matched ground-truth row, a ``BACKGROUND`` row or a ``NEUTRAL`` row per
        anchor.  No ground truth (``N == 0`` or only padding): all background.
    """
    matched_gt_boxes = None
    ### BEGIN SOLUTION
    low, high = iou_thresholds
    batched = gt_boxes.dim() == 3 or anchors.dim() == 3
    gt = gt_boxes if gt_boxes.dim() == 3 else gt_boxes[None]
    if anchors.dim() == 3 and gt.shape[0] != anchors.shape[0]:
        gt = gt.expand(anchors.shape[0], -1, -1)
    num_images, num_gt = gt.shape[:2]
    num_anchors = anchors.shape[-2]

    if num_gt == 0 or num_anchors == 0:
        matched_gt_boxes = gt.new_full((num_images, num_anchors, 5), BACKGROUND)
    else:
        is_real = gt[..., 4] >= 0  # (B, N): padding rows have class -1
        overlaps = _iou_per_image(anchors, gt[..., :4])  # (B, A, N)
        overlaps = torch.where(is_real[:, None, :], overlaps, overlaps.new_tensor(-1.0))

        best_iou, best_gt = overlaps.max(dim=2)  # (B, A)
        is_fg = best_iou >= high
        is_neutral = (best_iou > low) & ~is_fg

        if force_best_match:
            best_per_gt = overlaps.max(dim=1, keepdim=True).values  # (B, 1, N)
            # Padding columns hold -1 everywhere, so "> 0" also excludes them.
            is_best_pair = (overlaps == best_per_gt) & (best_per_gt > 0)  # (B, A, N)
            forced = is_best_pair.any(dim=2) & ~is_fg
            forced_gt = torch.where(is_best_pair, overlaps, overlaps.new_tensor(-1.0)).argmax(dim=2)
            best_gt = torch.where(forced, forced_gt, best_gt)
            is_fg = is_fg | forced
            is_neutral = is_neutral & ~forced

        matched = torch.gather(gt, 1, best_gt[..., None].expand(-1, -1, 5))  # (B, A, 5)
        sentinel = torch.where(is_neutral, NEUTRAL, BACKGROUND).to(gt.dtype)  # (B, A)
        matched_gt_boxes = torch.where(is_fg[..., None], matched, sentinel[..., None])
    if not batched:
        matched_gt_boxes = matched_gt_boxes[0]
    ### END SOLUTION
    return matched_gt_boxes


def _is_sentinel_row(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4+)`` -> ``(...)`` bool: the row is a ``BACKGROUND`` or ``NEUTRAL`` row (given).

    A real box has ``x1 < x2``, so its four coordinates can never all be equal.
    """
    xyxy = boxes[..., :4]
    return (xyxy == BACKGROUND).all(dim=-1) | (xyxy == NEUTRAL).all(dim=-1)


def rcnn_get_deltas_from_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Encode matched boxes relative to their anchors (Faster R-CNN parametrisation).

    With anchor centre/size ``(px, py, pw, ph)`` and box ``(bx, by, bw, bh)``:
    ``dx = (bx - px) / pw``, ``dy = (by - py) / ph``, ``dw = log(bw / pw)``,
    ``dh = log(bh / ph)``.

    Args:
        anchors: ``(..., 4)`` XYXY with positive width and height.
        gt_boxes: ``(..., 4)`` or ``(..., 5)`` matched rows, broadcastable
            against ``anchors``; ``BACKGROUND`` and ``NEUTRAL`` rows are allowed.

    Returns:
        ``(..., 4)`` deltas; rows for background or neutral anchors are all
        ``NEUTRAL`` (-1e8), the value the losses ignore.  Inverse of
        :func:`rcnn_apply_deltas_to_anchors` on every real row.
    """
    deltas = None
    ### BEGIN SOLUTION
    pw = anchors[..., 2] - anchors[..., 0]
    ph = anchors[..., 3] - anchors[..., 1]
    px = anchors[..., 0] + 0.5 * pw
    py = anchors[..., 1] + 0.5 * ph
    bw = gt_boxes[..., 2] - gt_boxes[..., 0]
    bh = gt_boxes[..., 3] - gt_boxes[..., 1]
    bx = gt_boxes[..., 0] + 0.5 * bw
    by = gt_boxes[..., 1] + 0.5 * bh
    deltas = torch.stack([(bx - px) / pw, (by - py) / ph, torch.log(bw / pw), torch.log(bh / ph)], dim=-1)
    # Sentinel rows have zero width (log 0 = -inf): replace them, never compute with them.
    deltas = torch.where(_is_sentinel_row(gt_boxes)[..., None], deltas.new_tensor(NEUTRAL), deltas)
    ### END SOLUTION
    return deltas


def rcnn_apply_deltas_to_anchors(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Decode ``(dx, dy, dw, dh)`` predictions into XYXY boxes (inverse of
    :func:`rcnn_get_deltas_from_anchors`).

    ``dw`` and ``dh`` are clamped to at most ``MAX_LOG_SCALE = log(224 / 8)``
    before ``exp`` so that a wild prediction cannot overflow; the clamp works on
    a copy (the caller's ``deltas`` are never modified).

    Args:
        deltas: ``(..., 4)``.
        anchors: ``(..., 4)`` XYXY, broadcastable against ``deltas``.

    Returns:
        ``(..., 4)`` XYXY boxes (not clipped to the image).
    """
    output_boxes = None
    ### BEGIN SOLUTION
    pw = anchors[..., 2] - anchors[..., 0]
    ph = anchors[..., 3] - anchors[..., 1]
    px = anchors[..., 0] + 0.5 * pw
    py = anchors[..., 1] + 0.5 * ph
    dx, dy, dw, dh = deltas.unbind(dim=-1)
    dw = dw.clamp(max=MAX_LOG_SCALE)  # out of place
    dh = dh.clamp(max=MAX_LOG_SCALE)
    cx = px + dx * pw
    cy = py + dy * ph
    half_w = 0.5 * pw * torch.exp(dw)
    half_h = 0.5 * ph * torch.exp(dh)
    output_boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)
    ### END SOLUTION
    return output_boxes


def sample_rpn_training(
    gt_boxes: torch.Tensor, num_samples: int, fg_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick a random, class-balanced subset of anchors to train on.

    Per image, at most ``floor(num_samples * fg_fraction)`` foreground anchors
    are drawn (fewer if the image has fewer), and background anchors fill the
    rest up to ``num_samples`` (fewer if there are not enough).  Neutral anchors
    are never drawn and no anchor is drawn twice.  Randomness comes from torch's
    global generator (of ``gt_boxes.device``), so ``torch.manual_seed`` makes
    it reproducible.

    Args:
        gt_boxes: ``(A, 5)`` or ``(B, A, 5)`` output of
            :func:`rcnn_match_anchors_to_gt`: foreground rows have a class
            ``>= 0``, background rows ``BACKGROUND``, neutral rows ``NEUTRAL``.
        num_samples: anchors drawn per image.
        fg_fraction: largest share of foreground among them.

    Returns:
        ``(fg_idx, bg_idx)``, int64 indices in increasing order into the
        ``A`` anchors (unbatched input) or into the ``B * A`` flattened anchors
        (batched input; image ``b``'s anchor ``a`` is ``b * A + a``).
    """
    fg_idx, bg_idx = None, None
    ### BEGIN SOLUTION
    classes = gt_boxes[..., 4]
    classes = classes.reshape(-1, classes.shape[-1]) if classes.dim() == 2 else classes[None]  # (B, A)
    is_fg = classes >= 0
    is_bg = classes == BACKGROUND
    max_fg = int(num_samples * fg_fraction)
    num_fg = is_fg.sum(dim=1).clamp(max=max_fg)  # (B,)
    num_bg = is_bg.sum(dim=1).clamp(max=num_samples - num_fg)

    def draw(candidates: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
        # Give every candidate a uniform random key (others +inf): the `quota`
        # smallest keys of each row are a uniform random subset of candidates.
        keys = torch.rand(candidates.shape, device=candidates.device)
        keys = torch.where(candidates, keys, torch.full_like(keys, math.inf))
        rank = keys.argsort(dim=1).argsort(dim=1)  # rank of each key in its row
        return (candidates & (rank < quota[:, None])).reshape(-1).nonzero().squeeze(1)

    fg_idx = draw(is_fg, num_fg)
    bg_idx = draw(is_bg, num_bg)
    ### END SOLUTION
    return fg_idx, bg_idx
