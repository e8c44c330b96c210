"""FCOS: a one-stage, anchor-free detector (Tian et al., 2019), as the course builds it.

The model follows the detector protocol at the end of
:mod:`data_utils.conventions`:

* ``model.train(); losses = model(images, gt_boxes)`` returns
  ``{"loss_cls", "loss_box", "loss_ctr"}`` (summed into the objective) plus
  two diagnostics that are only logged: ``"num_pos"`` (matched locations per
  image in this batch) and ``"normalizer"`` (the running average used to
  scale the losses).
* ``model.eval(); model.inference(images, score_thresh, nms_thresh)`` returns
  one :class:`~data_utils.conventions.Detections` per image.

Shape shorthand: ``B`` images, ``L`` locations of all levels together
(1029 = 784 + 196 + 49 at 224x224), ``C`` classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from data_utils.conventions import Detections
from solutions.backbone import DetectorBackboneWithFPN
from solutions.fcos_head import FCOSPredictionNetwork
from solutions.fcos_targets import (
    fcos_apply_deltas_to_locations,
    fcos_get_deltas_from_locations,
    fcos_make_centerness_targets,
    fcos_match_locations_to_gt,
)
from solutions.locations import get_fpn_location_coords
from solutions.non_max_suppression import class_spec_nms

#: Initial value of the loss normalizer (positive locations per image).
NORMALIZER_INIT = 150.0
#: Weight of the running average's old value in the normalizer update.
NORMALIZER_MOMENTUM = 0.9
#: Weight of the box-regression (L1) loss.
BOX_LOSS_WEIGHT = 0.25


def _cat_levels(per_level: dict[str, torch.Tensor], dim: int = 1) -> torch.Tensor:
    """Concatenate ``{level: (B, L_level, ...)}`` along the location axis, in dict order."""
    return torch.cat(list(per_level.values()), dim=dim)


class FCOS(nn.Module):
    """Backbone with FPN + :class:`FCOSPredictionNetwork` + FCOS targets and losses.

    Args:
        num_classes: ``C``, object classes (20 for VOC).
        fpn_channels: channels of the FPN levels.
        stem_channels: channels of the head's stem convs, e.g. ``[64, 64]``.
        weights: backbone weights passed to :class:`DetectorBackboneWithFPN`:
            ``"DEFAULT"`` (ImageNet, downloaded once) or ``None`` (random
            initialisation, used by the tests and the offline dataset).

    The buffer ``normalizer`` (a running average of the number of positive
    locations per image, starting at 150) is saved in checkpoints, so a
    resumed run scales its losses as the interrupted one did.
    """

    def __init__(
        self,
        num_classes: int,
        fpn_channels: int,
        stem_channels: list[int],
        weights: str | None = "DEFAULT",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = DetectorBackboneWithFPN(out_channels=fpn_channels, weights=weights)
        self.pred_net = FCOSPredictionNetwork(num_classes, fpn_channels, stem_channels)
        self.register_buffer("normalizer", torch.tensor(NORMALIZER_INIT))

    def _predict(self, images: torch.Tensor):
        """Backbone, FPN and head, with the predictions of all levels concatenated.

        Returns:
            ``(class_logits (B, L, C), boxreg_deltas (B, L, 4),
            centerness_logits (B, L, 1), locations {level: (L_level, 2)})``;
            the concatenation follows the order of ``locations``
            (p3, p4, p5), so row ``i`` of a prediction belongs to row ``i``
            of ``torch.cat(list(locations.values()))``.
        """
        class_logits = boxreg_deltas = centerness_logits = None
        locations: dict[str, torch.Tensor] = {}
        ### BEGIN SOLUTION
        feats = self.backbone(images)
        per_level_cls, per_level_box, per_level_ctr = self.pred_net(feats)
        locations = get_fpn_location_coords(
            {level: f.shape for level, f in feats.items()},
            self.backbone.fpn_strides,
            dtype=torch.float32,
            device=images.device,
        )
        class_logits = _cat_levels(per_level_cls)
        boxreg_deltas = _cat_levels(per_level_box)
        centerness_logits = _cat_levels(per_level_ctr)
        ### END SOLUTION
        return class_logits, boxreg_deltas, centerness_logits, locations

    def forward(self, images: torch.Tensor, gt_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses for a batch.

        Args:
            images: ``(B, 3, H, W)`` normalised images (any ``H``, ``W``).
            gt_boxes: ``(B, N, 5)`` rows ``(x1, y1, x2, y2, class)`` in input
                pixels, padded with ``-1`` rows.

        Returns:
            ``{"loss_cls", "loss_box", "loss_ctr"}``: the sigmoid focal loss on
            one-hot class targets (all-zero for background), ``0.25 * L1`` on
            the deltas and BCE-with-logits on centerness (both zero at
            background locations), each summed over the batch and divided by
            ``normalizer * B``; plus the diagnostics ``"num_pos"`` and
            ``"normalizer"`` (detached).  In training mode the normalizer is
            first updated to ``0.9 * normalizer + 0.1 * (positives per image)``;
            in eval mode it is left alone, so validation losses do not change
            the model.  Losses are computed in float32 even under autocast.
        """
        losses: dict[str, torch.Tensor] = {}
        ### BEGIN SOLUTION
        class_logits, boxreg_deltas, centerness_logits, locations = self._predict(images)
        strides = self.backbone.fpn_strides

        with torch.no_grad():
            # Targets for the whole batch at once: {level: (B, L_level, 5)}.
            matched = fcos_match_locations_to_gt(locations, strides, gt_boxes.float())
            gt_deltas = _cat_levels({
                level: fcos_get_deltas_from_locations(locations[level], matched[level], strides[level])
                for level in matched
            })  # (B, L, 4)
            matched = _cat_levels(matched)  # (B, L, 5)
            gt_centerness = fcos_make_centerness_targets(gt_deltas)  # (B, L)
            foreground = matched[..., 4] >= 0  # (B, L)

            num_images = images.shape[0]
            num_pos = foreground.sum() / num_images
            if self.training:
                self.normalizer.mul_(NORMALIZER_MOMENTUM).add_((1 - NORMALIZER_MOMENTUM) * num_pos)
            # One-hot class targets; background rows are all zero.
            gt_classes = F.one_hot(matched[..., 4].long().clamp(min=0), self.num_classes).float()
            gt_classes = gt_classes * foreground[..., None]

        # Losses in float32 even when the network ran in float16 under autocast.
        with torch.autocast(device_type=images.device.type, enabled=False):
            loss_cls = sigmoid_focal_loss(class_logits.float(), gt_classes, reduction="none")
            loss_box = BOX_LOSS_WEIGHT * F.l1_loss(boxreg_deltas.float(), gt_deltas, reduction="none")
            loss_ctr = F.binary_cross_entropy_with_logits(
                centerness_logits.float().squeeze(-1), gt_centerness.clamp(min=0), reduction="none"
            )
            # Zero (not multiply: that would keep NaN/inf) the background terms.
            loss_box = torch.where(foreground[..., None], loss_box, torch.zeros_like(loss_box))
            loss_ctr = torch.where(foreground, loss_ctr, torch.zeros_like(loss_ctr))

            scale = self.normalizer * num_images
            losses["loss_cls"] = loss_cls.sum() / scale
            losses["loss_box"] = loss_box.sum() / scale
            losses["loss_ctr"] = loss_ctr.sum() / scale
        losses["num_pos"] = num_pos.detach()
        losses["normalizer"] = self.normalizer.detach().clone()
        ### END SOLUTION
        return losses

    @torch.no_grad()
    def inference(
        self,
        images: torch.Tensor,
        score_thresh: float = 0.3,
        nms_thresh: float = 0.5,
    ) -> list[Detections]:
        """Detect objects in a batch of images (call ``model.eval()`` first).

        Every location predicts one box and, for its best class only, the
        score ``sqrt(sigmoid(class logit) * sigmoid(centerness logit))``.
        Locations scoring ``<= score_thresh`` are dropped, boxes are clipped
        to the image and class-specific NMS at ``nms_thresh`` removes
        duplicates.

        Args:
            images: ``(B, 3, H, W)`` normalised images.
            score_thresh: minimum score (exclusive) of a detection.
            nms_thresh: IoU above which a lower-scoring box of the same class
                is suppressed.

        Returns:
            ``B`` :class:`Detections` (boxes ``(K, 4)`` in ``[0, W] x [0, H]``,
            scores ``(K,)`` float32 by decreasing score, classes ``(K,)``
            int64 in ``[0, C)``), on ``images.device``.

        Everything up to NMS runs on the whole batch at once; the only Python
        loop over images is the one around :func:`class_spec_nms`, whose cost
        grows with the square of the number of boxes given to it (one call
        for the whole batch would compare boxes of different images too).
        """
        detections: list[Detections] = []
        ### BEGIN SOLUTION
        class_logits, boxreg_deltas, centerness_logits, locations = self._predict(images)
        height, width = images.shape[-2:]
        strides = self.backbone.fpn_strides

        # Per-location stride so that all levels are decoded in one call.
        location_strides = torch.cat([
            torch.full((loc.shape[0], 1), float(strides[level]), device=images.device)
            for level, loc in locations.items()
        ])  # (L, 1)
        all_locations = torch.cat(list(locations.values()))  # (L, 2)

        probs = torch.sqrt(torch.sigmoid(class_logits.float()) * torch.sigmoid(centerness_logits.float()))
        scores, classes = probs.max(dim=-1)  # (B, L): best class of each location
        boxes = fcos_apply_deltas_to_locations(boxreg_deltas.float(), all_locations, location_strides)
        # Clip to the image (out of place): x in [0, W], y in [0, H].
        upper = boxes.new_tensor([width, height, width, height])
        boxes = torch.minimum(boxes.clamp(min=0), upper)  # (B, L, 4)

        keep_mask = scores > score_thresh  # (B, L)
        for image_boxes, image_scores, image_classes, image_keep in zip(boxes, scores, classes, keep_mask):
            image_boxes, image_scores = image_boxes[image_keep], image_scores[image_keep]
            image_classes = image_classes[image_keep]
            keep = class_spec_nms(image_boxes, image_scores, image_classes, nms_thresh)
            detections.append(Detections(image_boxes[keep], image_scores[keep], image_classes[keep]))
        ### END SOLUTION
        return detections
