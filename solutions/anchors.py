"""Anchor boxes of the Region Proposal Network, one set per FPN level."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def generate_fpn_anchors(
    locations_per_fpn_level: dict[str, torch.Tensor],
    strides_per_fpn_level: dict[str, int],
    stride_scale: float,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
) -> dict[str, torch.Tensor]:
    """Place ``A = len(aspect_ratios)`` anchor boxes centred on every location.

    Every anchor of a level has the same area ``(stride_scale * stride) ** 2``;
    an aspect ratio ``r`` is height / width, so ``w = sqrt(area / r)`` and
    ``h = area / w`` (``r = 0.5`` gives a wide box, ``r = 2`` a tall one).

    Args:
        locations_per_fpn_level: ``{level: (H*W, 2)}`` centres ``(xc, yc)``
            from :func:`solutions.locations.get_fpn_location_coords`.
        strides_per_fpn_level: ``{level: stride}`` in pixels.
        stride_scale: side of a level's square anchor, in strides (8 in the RPN,
            so 64 / 128 / 256 px on p3 / p4 / p5).
        aspect_ratios: the ``A`` height/width ratios, in the order the
            prediction head uses for its ``A`` outputs per location.

    Returns:
        ``{level: (H*W*A, 4)}`` XYXY anchors, dtype/device of the locations.
        Anchor ``k`` of location ``l`` is row ``l * A + k`` (the ``A`` anchors of
        a location are contiguous, locations keep their row-major, x-fastest
        order), which is the order of the RPN head's ``(B, H*W*A)`` outputs.
        Anchors may extend beyond the image; they are not clipped.
    """
    anchors_per_fpn_level = {}
    ### BEGIN SOLUTION
    for level, locations in locations_per_fpn_level.items():
        area = float(stride_scale * strides_per_fpn_level[level]) ** 2
        # Sizes are computed in float64 whatever the locations' dtype, then cast.
        ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64, device=locations.device)
        widths = torch.sqrt(area / ratios)
        heights = area / widths
        half_sizes = (torch.stack([widths, heights], dim=1) / 2).to(locations.dtype)  # (A, 2)
        centres = locations[:, None, :]  # (L, 1, 2)
        corners = torch.cat([centres - half_sizes, centres + half_sizes], dim=2)  # (L, A, 4)
        anchors_per_fpn_level[level] = corners.reshape(-1, 4)
    ### END SOLUTION
    return anchors_per_fpn_level
