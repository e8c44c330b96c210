"""The FCOS prediction head, shared by every FPN level."""

from __future__ import annotations

import math

import torch
from torch import nn


class FCOSPredictionNetwork(nn.Module):
    """Per-location class logits, box deltas and centerness logits.

    Two parallel stems of 3x3 conv + ReLU (one for classification, one for
    box regression) run on every FPN level with the same weights.  Three 3x3
    convs read them: ``pred_cls`` (``num_classes`` logits) on the class stem,
    ``pred_box`` (4 deltas: left, top, right, bottom) and ``pred_ctr``
    (1 centerness logit) on the box stem.  (The FCOS paper put centerness on
    the class stem; the course, and this package, put it on the box stem.)

    Initialisation: stem and prediction conv weights ~ N(0, 0.01), biases 0,
    except ``pred_cls.bias = -log(99)`` so that every class starts with
    probability 0.01: otherwise the ~1000 background locations per image
    would swamp the focal loss in the first iterations.

    Args:
        num_classes: ``C``, object classes (no background class).
        in_channels: channels of the FPN features.
        stem_channels: output channels of each stem conv, e.g. ``[64, 64]``
            for two layers per stem (an empty list means no stem).
    """

    def __init__(self, num_classes: int, in_channels: int, stem_channels: list[int]):
        super().__init__()
        self.num_classes = num_classes
        stem_cls: list[nn.Module] = []
        stem_box: list[nn.Module] = []
        self.pred_cls: nn.Conv2d | None = None
        self.pred_box: nn.Conv2d | None = None
        self.pred_ctr: nn.Conv2d | None = None
        ### BEGIN SOLUTION
        channels = in_channels
        for out_channels in stem_channels:
            for stem in (stem_cls, stem_box):
                conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
                nn.init.normal_(conv.weight, mean=0.0, std=0.01)
                nn.init.zeros_(conv.bias)
                stem += [conv, nn.ReLU()]
            channels = out_channels

        self.pred_cls = nn.Conv2d(channels, num_classes, kernel_size=3, padding=1)
        self.pred_box = nn.Conv2d(channels, 4, kernel_size=3, padding=1)
        self.pred_ctr = nn.Conv2d(channels, 1, kernel_size=3, padding=1)
        for conv in (self.pred_cls, self.pred_box, self.pred_ctr):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)
        # Prior probability 0.01 for every class: sigmoid(-log(99)) = 1/100.
        nn.init.constant_(self.pred_cls.bias, -math.log(99))
        ### END SOLUTION
        self.stem_cls = nn.Sequential(*stem_cls)
        self.stem_box = nn.Sequential(*stem_box)

    def forward(
        self, feats_per_fpn_level: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Run the head on every level.

        Args:
            feats_per_fpn_level: ``{level: (B, in_channels, H, W)}``.

        Returns:
            ``(class_logits, boxreg_deltas, centerness_logits)``, three dicts
            ``{level: (B, H*W, C)}``, ``{level: (B, H*W, 4)}`` and
            ``{level: (B, H*W, 1)}``.  Row ``i`` of a level belongs to the
            location ``i`` returned by ``get_fpn_location_coords`` (row-major,
            x fastest).
        """
        class_logits: dict[str, torch.Tensor] = {}
        boxreg_deltas: dict[str, torch.Tensor] = {}
        centerness_logits: dict[str, torch.Tensor] = {}
        ### BEGIN SOLUTION
        def flatten(x: torch.Tensor) -> torch.Tensor:
            # (B, C, H, W) -> (B, H, W, C) -> (B, H*W, C): x varies fastest.
            return x.permute(0, 2, 3, 1).flatten(1, 2)

        for level, feats in feats_per_fpn_level.items():
            cls_feats = self.stem_cls(feats)
            box_feats = self.stem_box(feats)
            class_logits[level] = flatten(self.pred_cls(cls_feats))
            boxreg_deltas[level] = flatten(self.pred_box(box_feats))
            centerness_logits[level] = flatten(self.pred_ctr(box_feats))
        ### END SOLUTION
        return class_logits, boxreg_deltas, centerness_logits
