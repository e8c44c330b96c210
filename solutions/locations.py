"""Centres of the feature-map cells of every FPN level, in input-image pixels."""

from __future__ import annotations

import torch


def get_fpn_location_coords(
    shape_per_fpn_level: dict[str, tuple],
    strides_per_fpn_level: dict[str, int],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Map every cell of every FPN level to its centre in the input image.

    Args:
        shape_per_fpn_level: ``{level: shape}`` where ``shape`` ends with
            ``(H, W)`` (e.g. a feature's ``(B, C, H, W)`` shape).
        strides_per_fpn_level: ``{level: stride}`` in pixels.
        dtype, device: of the returned tensors.

    Returns:
        ``{level: (H*W, 2)}`` tensors of ``(xc, yc)`` with
        ``xc = stride * (col + 0.5)`` and ``yc = stride * (row + 0.5)``,
        ordered row-major with **x varying fastest**: the same order as the
        ``(B, H*W, C)`` flattening of a ``(B, C, H, W)`` prediction.
    """
    location_coords = {}
    ### BEGIN SOLUTION
    for level, shape in shape_per_fpn_level.items():
        stride = strides_per_fpn_level[level]
        height, width = int(shape[-2]), int(shape[-1])
        xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride
        ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride
        # indexing="ij" makes the last (x) index vary fastest after flattening.
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        location_coords[level] = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    ### END SOLUTION
    return location_coords
