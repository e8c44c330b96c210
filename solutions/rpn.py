"""Region Proposal Network: the first stage of Faster R-CNN.

Shape shorthand (see :mod:`data_utils.conventions`): ``B`` images, level of
``H x W`` locations, ``A`` anchors per location, ``T`` anchors of all levels
together (3087 at 224 px with ``A = 3``: 2352 + 588 + 147).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from solutions.anchors import generate_fpn_anchors
from solutions.locations import get_fpn_location_coords
from solutions.non_max_suppression import class_spec_nms
from solutions.rcnn_targets import (
    rcnn_apply_deltas_to_anchors,
    rcnn_get_deltas_from_anchors,
    rcnn_match_anchors_to_gt,
    sample_rpn_training,
)


def flatten_anchor_predictions(prediction: torch.Tensor, values_per_anchor: int) -> torch.Tensor:
    """Reorder a head's output map to the anchors' order.

    Args:
        prediction: ``(B, A * K, H, W)``; channel ``a * K + k`` holds value ``k``
            of anchor ``a`` (``K = values_per_anchor``).

    Returns:
        ``(B, H*W*A, K)``: row ``(h * W + w) * A + a`` is anchor ``a`` of
        location ``(h, w)``, exactly the order of :func:`generate_fpn_anchors`.
    """
    flat = None
    ### BEGIN SOLUTION
    batch, channels, height, width = prediction.shape
    num_anchors = channels // values_per_anchor
    flat = (
        prediction.view(batch, num_anchors, values_per_anchor, height, width)
        .permute(0, 3, 4, 1, 2)  # (B, H, W, A, K): location-major, then anchor
        .reshape(batch, height * width * num_anchors, values_per_anchor)
    )
    ### END SOLUTION
    return flat


class RPNPredictionNetwork(nn.Module):
    """Objectness and box-delta predictions for the ``A`` anchors of every location.

    One stem of 3x3 conv + ReLU layers (``stem_channels``, may be empty) shared
    by all FPN levels, then two 1x1 convs: ``pred_obj`` (``A`` logits) and
    ``pred_box`` (``4 * A`` deltas, channel ``a * 4 + k`` = value ``k`` of
    anchor ``a``).  Conv weights ~ N(0, 0.01), biases 0.
    """

    def __init__(self, in_channels: int, stem_channels: Sequence[int], num_anchors: int = 3):
        super().__init__()
        self.num_anchors = num_anchors
        self.stem_rpn = None
        self.pred_obj = None
        self.pred_box = None
        ### BEGIN SOLUTION
        layers = []
        channels = in_channels
        for out_channels in stem_channels:
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            channels = out_channels
        self.stem_rpn = nn.Sequential(*layers)
        self.pred_obj = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.pred_box = nn.Conv2d(channels, 4 * num_anchors, kernel_size=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                nn.init.zeros_(module.bias)
        ### END SOLUTION

    def forward(self, feats_per_fpn_level: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """``{level: (B, C, H, W)}`` -> ``({level: (B, H*W*A)}, {level: (B, H*W*A, 4)})``
        objectness logits and box deltas, in anchor order (see
        :func:`flatten_anchor_predictions`)."""
        object_logits, boxreg_deltas = {}, {}
        ### BEGIN SOLUTION
        for level, feats in feats_per_fpn_level.items():
            stem = self.stem_rpn(feats)
            object_logits[level] = flatten_anchor_predictions(self.pred_obj(stem), 1).squeeze(-1)
            boxreg_deltas[level] = flatten_anchor_predictions(self.pred_box(stem), 4)
        ### END SOLUTION
        return object_logits, boxreg_deltas


class RPN(nn.Module):
    """Region Proposal Network: a prediction head, anchors, training losses and
    proposal selection.

    ``forward(feats, strides, gt_boxes=None, image_size=None)`` returns a dict:

    * ``"proposals"``: list of ``B`` tensors ``(P_b, 4)`` XYXY, clipped to the
      image, detached, by decreasing objectness, ``P_b <= post_nms_topk``.
      Always computed (training needs them for the second stage);
    * ``"proposal_scores"``: list of ``(P_b,)`` objectness probabilities;
    * with ``gt_boxes``: ``"loss_rpn_obj"``, ``"loss_rpn_box"`` (scalars) and
      ``"rpn_num_fg"`` (foreground anchors sampled per image, a diagnostic).

    Proposal selection: per image and level the ``pre_nms_topk`` anchors with
    the highest objectness are decoded and clipped, boxes under ``min_size``
    pixels on a side are dropped, NMS (``nms_thresh``) runs per level (one call
    per image with the level as the class), and the ``post_nms_topk`` best of
    all levels are kept.  The loop over images around NMS is deliberate: with
    the blockwise NMS of this package, offsetting all images into one call
    would make the cost grow with the square of the batch size.
    """

    def __init__(
        self,
        fpn_channels: int,
        stem_channels: Sequence[int],
        batch_size_per_image: int = 16,
        anchor_stride_scale: float = 8,
        anchor_aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        anchor_iou_thresholds: tuple[float, float] = (0.3, 0.6),
        nms_thresh: float = 0.7,
        pre_nms_topk: int = 400,
        post_nms_topk: int = 100,
        fg_fraction: float = 0.5,
        force_best_match: bool = True,
        min_size: float = 1.0,
    ):
        super().__init__()
        self.pred_net = RPNPredictionNetwork(fpn_channels, stem_channels, num_anchors=len(anchor_aspect_ratios))
        self.batch_size_per_image = batch_size_per_image
        self.anchor_stride_scale = anchor_stride_scale
        self.anchor_aspect_ratios = tuple(anchor_aspect_ratios)
        self.anchor_iou_thresholds = tuple(anchor_iou_thresholds)
        self.nms_thresh = nms_thresh
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.fg_fraction = fg_fraction
        self.force_best_match = force_best_match
        self.min_size = min_size

    def get_anchors(self, feats_per_fpn_level: dict, strides_per_fpn_level: dict) -> dict[str, torch.Tensor]:
        """``{level: (H*W*A, 4)}`` anchors for these feature maps (float32 when
        the features are half precision, else the features' dtype)."""
        first = next(iter(feats_per_fpn_level.values()))
        dtype = torch.promote_types(first.dtype, torch.float32)
        shapes = {level: feats.shape for level, feats in feats_per_fpn_level.items()}
        locations = get_fpn_location_coords(shapes, strides_per_fpn_level, dtype=dtype, device=first.device)
        return generate_fpn_anchors(
            locations, strides_per_fpn_level, self.anchor_stride_scale, self.anchor_aspect_ratios
        )

    def forward(
        self,
        feats_per_fpn_level: dict[str, torch.Tensor],
        strides_per_fpn_level: dict[str, int],
        gt_boxes: torch.Tensor | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> dict:
        """See the class docstring.  ``image_size = (H, W)`` of the network
        input, used to clip proposals; by default the finest level's size times
        its stride."""
        if image_size is None:
            level, feats = max(feats_per_fpn_level.items(), key=lambda item: item[1].shape[-1])
            stride = strides_per_fpn_level[level]
            image_size = (feats.shape[-2] * stride, feats.shape[-1] * stride)
        object_logits, boxreg_deltas = self.pred_net(feats_per_fpn_level)
        anchors = self.get_anchors(feats_per_fpn_level, strides_per_fpn_level)
        proposals, scores = self.predict_proposals(anchors, object_logits, boxreg_deltas, image_size)
        output = {"proposals": proposals, "proposal_scores": scores}
        if gt_boxes is not None:
            output.update(self.compute_losses(anchors, object_logits, boxreg_deltas, gt_boxes))
        return output

    def compute_losses(
        self,
        anchors_per_fpn_level: dict[str, torch.Tensor],
        object_logits: dict[str, torch.Tensor],
        boxreg_deltas: dict[str, torch.Tensor],
        gt_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Objectness and box losses on ``batch_size_per_image`` sampled anchors per image.

        All levels are concatenated in the same level order for anchors,
        logits and deltas, so anchor ``t`` and prediction ``t`` stay together.
        Matching runs for the whole batch at once (``(B, N, 5)`` ground truth);
        sampling returns indices into the ``B * T`` flattened anchors.

        Losses: binary cross-entropy on the objectness of sampled anchors
        (foreground = 1, background = 0) and L1 on the deltas of sampled
        foreground anchors, each summed and divided by
        ``batch_size_per_image * B``; computed in float32 (AMP-safe).
        """
        losses = {}
        ### BEGIN SOLUTION
        levels = list(object_logits)
        anchors = torch.cat([anchors_per_fpn_level[level] for level in levels])  # (T, 4)
        logits = torch.cat([object_logits[level] for level in levels], dim=1)  # (B, T)
        deltas = torch.cat([boxreg_deltas[level] for level in levels], dim=1)  # (B, T, 4)
        num_images, num_anchors = logits.shape

        matched = rcnn_match_anchors_to_gt(
            anchors, gt_boxes.to(anchors.dtype), self.anchor_iou_thresholds, self.force_best_match
        )  # (B, T, 5)
        fg_idx, bg_idx = sample_rpn_training(matched, self.batch_size_per_image, self.fg_fraction)

        sampled = torch.cat([fg_idx, bg_idx])
        sampled_logits = logits.reshape(-1)[sampled].float()
        labels = torch.cat([torch.ones_like(fg_idx), torch.zeros_like(bg_idx)]).to(sampled_logits.dtype)
        target_deltas = rcnn_get_deltas_from_anchors(
            anchors[fg_idx % num_anchors], matched.reshape(-1, 5)[fg_idx]
        ).float()
        predicted_deltas = deltas.reshape(-1, 4)[fg_idx].float()

        normalizer = self.batch_size_per_image * num_images
        obj_loss = F.binary_cross_entropy_with_logits(sampled_logits, labels, reduction="sum")
        losses["loss_rpn_obj"] = obj_loss / normalizer
        losses["loss_rpn_box"] = F.l1_loss(predicted_deltas, target_deltas, reduction="sum") / normalizer
        losses["rpn_num_fg"] = torch.tensor(len(fg_idx) / num_images, device=logits.device)
        ### END SOLUTION
        return losses

    @torch.no_grad()
    def predict_proposals(
        self,
        anchors_per_fpn_level: dict[str, torch.Tensor],
        object_logits: dict[str, torch.Tensor],
        boxreg_deltas: dict[str, torch.Tensor],
        image_size: tuple[int, int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Select proposals (see the class docstring): returns per-image lists of
        ``(P_b, 4)`` boxes and ``(P_b,)`` objectness probabilities."""
        proposals, proposal_scores = [], []
        ### BEGIN SOLUTION
        height, width = int(image_size[0]), int(image_size[1])
        boxes_all, logits_all, level_ids = [], [], []
        for level_id, level in enumerate(object_logits):
            logits = object_logits[level].detach().float()  # (B, HWA)
            topk = min(self.pre_nms_topk, logits.shape[1])
            top_logits, top_idx = logits.topk(topk, dim=1)  # (B, k)
            deltas = boxreg_deltas[level].detach().float()
            deltas = deltas.gather(1, top_idx[..., None].expand(-1, -1, 4))  # (B, k, 4)
            anchors = anchors_per_fpn_level[level].float()[top_idx]  # (B, k, 4)
            boxes = rcnn_apply_deltas_to_anchors(deltas, anchors)
            upper = boxes.new_tensor([width, height, width, height])
            boxes = torch.minimum(boxes.clamp(min=0), upper)  # clip to the image
            boxes_all.append(boxes)
            logits_all.append(top_logits)
            level_ids.append(torch.full((topk,), level_id, dtype=torch.long, device=logits.device))
        boxes_all = torch.cat(boxes_all, dim=1)  # (B, K, 4), K = sum of the levels' top-k
        logits_all = torch.cat(logits_all, dim=1)  # (B, K)
        level_ids = torch.cat(level_ids)  # (K,)

        sizes = boxes_all[..., 2:] - boxes_all[..., :2]
        large_enough = (sizes >= self.min_size).all(dim=-1)  # (B, K)
        for boxes, logits, keep in zip(boxes_all, logits_all, large_enough):
            boxes, logits, levels = boxes[keep], logits[keep], level_ids[keep]
            kept = class_spec_nms(boxes, logits, levels, self.nms_thresh)[: self.post_nms_topk]
            proposals.append(boxes[kept])
            proposal_scores.append(torch.sigmoid(logits[kept]))
        ### END SOLUTION
        return proposals, proposal_scores
