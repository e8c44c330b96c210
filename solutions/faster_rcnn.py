"""Faster R-CNN: backbone + FPN, RPN proposals, RoIAlign and a region classifier.

As in the course, the second stage only classifies: a detection's box is its
RPN proposal.  Shape shorthand: ``B`` images, ``N`` ground-truth rows per image,
``R`` RoIs, ``C`` object classes (the classifier has ``C + 1`` outputs, index 0
= background).

Order by construction
---------------------
The second stage keeps one flat table of sampled RoIs: rows ``(image index,
box, target class)`` are all gathered with the same index vector in
:meth:`FasterRCNN.sample_rois`, and :func:`pool_roi_features` writes the
feature of row ``i`` into slot ``i`` of a preallocated tensor, whatever FPN
level it comes from.  Feature ``i`` therefore always belongs to target ``i``;
the course's version concatenated features level by level but targets image
by image, and trained the classifier on wrong labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from data_utils.conventions import NEUTRAL, Detections
from solutions.backbone import DetectorBackboneWithFPN
from solutions.box_ops import box_area
from solutions.non_max_suppression import class_spec_nms
from solutions.rcnn_targets import rcnn_match_anchors_to_gt, sample_rpn_training
from solutions.rpn import RPN


def assign_rois_to_fpn_levels(
    boxes: torch.Tensor,
    min_level: int = 3,
    max_level: int = 5,
    canonical_level: int = 4,
    canonical_size: float = 128.0,
) -> torch.Tensor:
    """FPN level ``k`` (3 for "p3", ...) each RoI is pooled from.

    Rule: ``k = round(canonical_level + log2(sqrt(w * h) / canonical_size))``,
    rounding halves up, clamped to ``[min_level, max_level]``.

    Why not the FPN paper's ``floor(4 + log2(sqrt(wh) / 224))``: its 224 is the
    ImageNet crop size measured in ~800 px images.  Taken literally on our
    224 px inputs, a RoI would need a side of 448 px to reach p5, so p5 would
    never be used and p3 would take everything under 112 px.  Here the rule is
    tied to the RPN's anchors instead: the p3/p4/p5 anchors have sides 64/128/256
    px (stride_scale 8 times the stride), and a RoI goes to the level whose
    anchors are nearest to it in log-size.  With the defaults (p4 <-> 128 px)
    that means p3 below 64*sqrt(2) = 90.5 px, p4 from 90.5 to 181 px, p5 from
    181 px (equivalently: the FPN formula with canonical size 90.5 px).  On its
    level a RoI then spans about 6 to 11 feature cells, so the 7x7 RoIAlign grid
    samples roughly one bin per cell.  Empty boxes go to ``min_level``.

    Args:
        boxes: ``(R, 4)`` XYXY.

    Returns:
        ``(R,)`` int64 levels.
    """
    levels = None
    ### BEGIN SOLUTION
    scale = torch.sqrt(box_area(boxes).float())  # log2(0) = -inf, clamped below
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_size) + 0.5)
    levels = levels.clamp(min_level, max_level).to(torch.long)
    ### END SOLUTION
    return levels


def pool_roi_features(
    feats_per_fpn_level: dict[str, torch.Tensor],
    strides_per_fpn_level: dict[str, int],
    image_idx: torch.Tensor,
    boxes: torch.Tensor,
    output_size: tuple[int, int] = (7, 7),
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """RoIAlign features of a flat table of RoIs, row ``i`` -> feature ``i``.

    Each RoI is pooled from the level given by :func:`assign_rois_to_fpn_levels`
    (levels are named ``"p<k>"``) with ``torchvision.ops.roi_align(aligned=True,
    spatial_scale=1/stride, sampling_ratio=2)``.  The result is written into a
    preallocated ``(R, C, h, w)`` tensor at the rows of that level, so the output
    order is the input order, never "level by level".

    Args:
        feats_per_fpn_level: ``{"p3": (B, C, H, W), ...}``.
        strides_per_fpn_level: ``{level: stride}``.
        image_idx: ``(R,)`` int64, the image each RoI belongs to.
        boxes: ``(R, 4)`` XYXY in input-image pixels.

    Returns:
        ``(R, C, *output_size)``; float32 when the features are half precision
        (RoIAlign runs in at least float32, which keeps it AMP-safe).
    """
    pooled = None
    ### BEGIN SOLUTION
    first = next(iter(feats_per_fpn_level.values()))
    dtype = torch.promote_types(first.dtype, torch.float32)
    pooled = first.new_zeros((len(boxes), first.shape[1], *output_size), dtype=dtype)
    levels = assign_rois_to_fpn_levels(boxes)
    rois = torch.cat([image_idx[:, None].to(dtype), boxes.to(dtype)], dim=1)  # (R, 5) as roi_align wants
    for level, feats in feats_per_fpn_level.items():
        rows = (levels == int(level.lstrip("p"))).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        pooled[rows] = roi_align(
            feats.to(dtype), rois[rows], output_size,
            spatial_scale=1.0 / strides_per_fpn_level[level], sampling_ratio=sampling_ratio, aligned=True,
        )
    ### END SOLUTION
    return pooled


class FasterRCNN(nn.Module):
    """Two-stage detector following the detector protocol of :mod:`data_utils.conventions`.

    * ``model(images, gt_boxes)`` (training): dict with ``loss_rpn_obj``,
      ``loss_rpn_box``, ``loss_cls`` and diagnostics ``rpn_num_fg``,
      ``roi_num_fg``, ``num_proposals`` (per image) and ``roi_fg_accuracy``
      (share of sampled foreground RoIs whose arg-max class is right).
      ``model(images)`` without ground truth returns :meth:`inference`.
    * ``model.inference(images, score_thresh=0.2, nms_thresh=0.5)``: list of
      :class:`Detections`.

    Second-stage training: the RPN's proposals (detached) plus the image's
    ground-truth boxes are matched to the ground truth with IoU thresholds
    ``(0.5, 0.5)`` (>= 0.5 foreground, < 0.5 background), ``batch_size_per_image``
    RoIs per image are sampled with at most ``fg_fraction`` foreground, pooled
    with :func:`pool_roi_features` and classified into ``num_classes + 1``
    classes with cross-entropy (background = 0, class ``c`` = ``c + 1``),
    averaged over the sampled RoIs.

    The classifier (``cls_pred``): 3x3 conv + ReLU layers (``stem_channels``,
    may be empty), flatten, one linear layer; weights ~ N(0, 0.01), biases 0.
    """

    def __init__(
        self,
        backbone: nn.Module,
        rpn: nn.Module,
        stem_channels: Sequence[int],
        num_classes: int = 20,
        batch_size_per_image: int = 32,
        roi_size: tuple[int, int] = (7, 7),
        fg_fraction: float = 0.25,
        roi_iou_thresholds: tuple[float, float] = (0.5, 0.5),
    ):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.roi_size = tuple(roi_size)
        self.fg_fraction = fg_fraction
        self.roi_iou_thresholds = tuple(roi_iou_thresholds)
        self.cls_pred = None
        ### BEGIN SOLUTION
        layers = []
        channels = backbone.out_channels
        for out_channels in stem_channels:
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            channels = out_channels
        layers += [nn.Flatten(), nn.Linear(channels * self.roi_size[0] * self.roi_size[1], num_classes + 1)]
        self.cls_pred = nn.Sequential(*layers)
        for module in self.cls_pred.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                nn.init.zeros_(module.bias)
        ### END SOLUTION

    def forward(self, images: torch.Tensor, gt_boxes: torch.Tensor | None = None):
        """Training losses (see the class docstring), or :meth:`inference` when
        ``gt_boxes`` is None."""
        if gt_boxes is None:
            return self.inference(images)
        strides = self.backbone.fpn_strides
        feats = self.backbone(images)
        rpn_output = self.rpn(feats, strides, gt_boxes, image_size=tuple(images.shape[-2:]))
        proposals = rpn_output["proposals"]

        losses = {}
        ### BEGIN SOLUTION
        image_idx, boxes, targets = self.sample_rois(proposals, gt_boxes)
        roi_feats = pool_roi_features(feats, strides, image_idx, boxes, self.roi_size)
        logits = self.cls_pred(roi_feats).float()  # (R, C + 1), row i <-> targets[i]
        loss_cls = F.cross_entropy(logits, targets, reduction="sum") / max(len(targets), 1)
        num_images = images.shape[0]
        is_fg = targets > 0
        fg_correct = (logits.detach().argmax(dim=1) == targets) & is_fg
        losses = {
            "loss_rpn_obj": rpn_output["loss_rpn_obj"],
            "loss_rpn_box": rpn_output["loss_rpn_box"],
            "loss_cls": loss_cls,
            "rpn_num_fg": rpn_output["rpn_num_fg"],
            "roi_num_fg": is_fg.sum() / num_images,
            "roi_fg_accuracy": fg_correct.sum() / is_fg.sum().clamp(min=1),
            "num_proposals": torch.tensor(sum(len(p) for p in proposals) / num_images, device=images.device),
        }
        ### END SOLUTION
        return losses

    def sample_rois(
        self, proposals: list[torch.Tensor], gt_boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The second stage's training RoIs as one flat table.

        Args:
            proposals: ``B`` tensors ``(P_b, 4)``.
            gt_boxes: ``(B, N, 5)`` padded ground truth.

        Returns:
            ``(image_idx (R,) int64, boxes (R, 4), targets (R,) int64)`` where row
            ``i`` is one sampled RoI: the image it belongs to, its box, and its
            class in ``[0, C]`` (0 = background, ``c + 1`` = object class ``c``).
            All three come from one index vector, so they cannot disagree.
        """
        image_idx, boxes, targets = None, None, None
        ### BEGIN SOLUTION
        gt_boxes = gt_boxes.to(proposals[0].dtype)
        # Pad the proposals to (B, P, 4) and append each image's ground truth
        # (padding included): the RoIs of image b are rois[b], valid where is_valid[b].
        padded = nn.utils.rnn.pad_sequence(proposals, batch_first=True)  # (B, P, 4)
        lengths = torch.tensor([len(p) for p in proposals], device=padded.device)
        is_proposal = torch.arange(padded.shape[1], device=padded.device)[None, :] < lengths[:, None]
        rois = torch.cat([padded, gt_boxes[..., :4]], dim=1)  # (B, P + N, 4)
        is_valid = torch.cat([is_proposal, gt_boxes[..., 4] >= 0], dim=1)  # (B, P + N)

        matched = rcnn_match_anchors_to_gt(rois, gt_boxes, self.roi_iou_thresholds)  # (B, P + N, 5)
        matched = torch.where(is_valid[..., None], matched, matched.new_tensor(NEUTRAL))  # padding: never sampled
        fg_idx, bg_idx = sample_rpn_training(matched, self.batch_size_per_image, self.fg_fraction)

        rows = torch.cat([fg_idx, bg_idx])  # indices into the B * (P + N) flattened RoIs
        image_idx = torch.div(rows, rois.shape[1], rounding_mode="floor")
        boxes = rois.reshape(-1, 4)[rows]
        classes = matched.reshape(-1, 5)[rows, 4]
        targets = torch.where(classes >= 0, classes + 1, torch.zeros_like(classes)).long()
        ### END SOLUTION
        return image_idx, boxes, targets

    @torch.no_grad()
    def inference(self, images: torch.Tensor, score_thresh: float = 0.2, nms_thresh: float = 0.5) -> list[Detections]:
        """Detections of every image (call ``model.eval()`` first).

        Each proposal gets the class with the largest softmax probability among
        the ``C + 1``; proposals whose best class is background or whose
        probability is not above ``score_thresh`` are dropped, then
        class-specific NMS (``nms_thresh``) runs per image (one call for the
        batch: image and class together form the NMS group).

        Returns:
            ``B`` :class:`Detections` (boxes ``(K, 4)``, scores ``(K,)``,
            classes ``(K,)`` int64 in ``[0, C)``) by decreasing score.
        """
        detections = []
        strides = self.backbone.fpn_strides
        feats = self.backbone(images)
        proposals = self.rpn(feats, strides, image_size=tuple(images.shape[-2:]))["proposals"]
        ### BEGIN SOLUTION
        counts = torch.tensor([len(p) for p in proposals], device=images.device)
        image_idx = torch.repeat_interleave(torch.arange(len(proposals), device=images.device), counts)
        boxes = torch.cat(proposals)
        roi_feats = pool_roi_features(feats, strides, image_idx, boxes, self.roi_size)
        probs = F.softmax(self.cls_pred(roi_feats).float(), dim=1)
        scores, labels = probs.max(dim=1)
        keep = (labels > 0) & (scores > score_thresh)
        boxes, scores, classes, image_idx = boxes[keep], scores[keep], labels[keep] - 1, image_idx[keep]
        keep = class_spec_nms(boxes, scores, image_idx * self.num_classes + classes, nms_thresh)
        boxes, scores, classes, image_idx = boxes[keep], scores[keep], classes[keep], image_idx[keep]
        for b in range(len(proposals)):
            mine = image_idx == b
            detections.append(Detections(boxes[mine], scores[mine], classes[mine]))
        ### END SOLUTION
        return detections


def build_faster_rcnn(
    num_classes: int = 20,
    fpn_channels: int = 128,
    stem_channels: Sequence[int] = (128, 128),
    weights: str | None = "DEFAULT",
    batch_size_per_image: int = 32,
    **rpn_kwargs,
) -> FasterRCNN:
    """The course's Faster R-CNN: a RegNetX-400MF backbone with FPN, an
    :class:`~solutions.rpn.RPN` whose head and the region classifier both use
    ``stem_channels``, and ``batch_size_per_image`` sampled RoIs per image.

    ``rpn_kwargs`` go to the RPN (e.g. ``pre_nms_topk=500, post_nms_topk=200``
    for the full VOC schedule); ``weights`` to the backbone (``None`` for a
    random, offline initialisation).
    """
    backbone = DetectorBackboneWithFPN(out_channels=fpn_channels, weights=weights)
    rpn = RPN(fpn_channels, list(stem_channels), **rpn_kwargs)
    return FasterRCNN(backbone, rpn, list(stem_channels), num_classes=num_classes,
                      batch_size_per_image=batch_size_per_image)
