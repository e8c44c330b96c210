"""Backbone + FPN shapes and FPN location coordinates (the original course's sanity values).

Each value check is written as a small ``check_*`` function; the tests run it
on the reference and also on a deliberately broken variant (transposed
locations, the course notebook's bug), asserting that the check rejects it.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from data_utils.conventions import FPN_STRIDES
from solutions.backbone import DetectorBackboneWithFPN
from solutions.locations import get_fpn_location_coords

SHAPES_224 = {"p3": (2, 64, 28, 28), "p4": (2, 64, 14, 14), "p5": (2, 64, 7, 7)}

#: The original course's sanity values: the correct (x fastest) first five locations of each level.
FIRST_FIVE = {
    "p3": [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0], [36.0, 4.0]],
    "p4": [[8.0, 8.0], [24.0, 8.0], [40.0, 8.0], [56.0, 8.0], [72.0, 8.0]],
    "p5": [[16.0, 16.0], [48.0, 16.0], [80.0, 16.0], [112.0, 16.0], [144.0, 16.0]],
}


@pytest.fixture(scope="module")
def backbone() -> DetectorBackboneWithFPN:
    torch.manual_seed(0)
    return DetectorBackboneWithFPN(out_channels=64, weights=None).eval()


# ---------------------------------------------------------------- backbone


def test_backbone_and_fpn_shapes_224(backbone):
    images = torch.randn(2, 3, 224, 224)
    before = images.clone()
    with torch.no_grad():
        trunk = backbone.trunk(images)
        fpn = backbone(images)
    assert {k: tuple(v.shape) for k, v in trunk.items()} == {
        "c3": (2, 64, 28, 28), "c4": (2, 160, 14, 14), "c5": (2, 400, 7, 7)}
    assert {k: tuple(v.shape) for k, v in fpn.items()} == SHAPES_224
    assert list(fpn) == ["p3", "p4", "p5"]
    assert backbone.fpn_strides == {"p3": 8, "p4": 16, "p5": 32}
    assert_close(images, before, rtol=0, atol=0)  # input untouched


@pytest.mark.parametrize("batch, height, width", [(1, 160, 256), (3, 256, 160)])
def test_backbone_non_square_and_batch_sizes(backbone, batch, height, width):
    with torch.no_grad():
        fpn = backbone(torch.randn(batch, 3, height, width))
    for level, stride in FPN_STRIDES.items():
        assert tuple(fpn[level].shape) == (batch, 64, height // stride, width // stride)
        assert torch.isfinite(fpn[level]).all()


def test_fpn_top_down_path_carries_coarse_information(backbone):
    """A change confined to c5 must reach p3 (through the top-down path)."""
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = backbone.trunk(images)
        lat5 = backbone.fpn_params["lateral_p5"]
        # Perturb only the lateral of c5 and check that p3 moves.
        p3_before = backbone(images)["p3"]
        bias = lat5.bias.clone()
        lat5.bias += 1.0
        try:
            p3_after = backbone(images)["p3"]
        finally:
            lat5.bias.copy_(bias)
    assert feats["c5"].shape[-1] == 7
    assert (p3_after - p3_before).abs().max() > 1e-4


# ---------------------------------------------------------------- locations


def transposed_locations(shapes, strides, dtype=torch.float32, device="cpu"):
    """The course notebook's bug: y varies fastest."""
    good = get_fpn_location_coords(shapes, strides, dtype, device)
    out = {}
    for level, shape in shapes.items():
        h, w = shape[-2:]
        out[level] = good[level].reshape(h, w, 2).transpose(0, 1).reshape(-1, 2)
    return out


def swapped_xy_locations(shapes, strides, dtype=torch.float32, device="cpu"):
    """(yc, xc) instead of (xc, yc)."""
    return {k: v.flip(-1) for k, v in get_fpn_location_coords(shapes, strides, dtype, device).items()}


def check_first_five(fn) -> None:
    locations = fn(SHAPES_224, FPN_STRIDES)
    for level, expected in FIRST_FIVE.items():
        assert locations[level].shape == (SHAPES_224[level][2] * SHAPES_224[level][3], 2)
        assert_close(locations[level][:5], torch.tensor(expected))


def check_order_matches_flattening(fn, height=3, width=5, stride=8) -> None:
    """Prediction i of a (B, C, H, W) -> (B, H*W, C) flattening belongs to location i."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    feature = torch.stack([cols, rows]).float()[None]  # (1, 2, H, W): channel 0 = col, 1 = row
    flat = feature.permute(0, 2, 3, 1).reshape(1, height * width, 2)[0]
    locations = fn({"p": (1, 2, height, width)}, {"p": stride})["p"]
    assert_close(locations, (flat + 0.5) * stride)


def test_first_five_locations_sanity_values():
    check_first_five(get_fpn_location_coords)


def test_location_order_matches_prediction_flattening_non_square():
    check_order_matches_flattening(get_fpn_location_coords, height=3, width=5)
    check_order_matches_flattening(get_fpn_location_coords, height=6, width=2, stride=32)


@pytest.mark.parametrize("broken", [transposed_locations, swapped_xy_locations])
def test_location_checks_reject_broken_variants(broken):
    with pytest.raises(AssertionError):
        check_first_five(broken)
    with pytest.raises(AssertionError):
        check_order_matches_flattening(broken)


def test_locations_non_square_formula_dtype_and_empty():
    shapes = {"p3": (3, 64, 20, 32), "p4": (3, 64, 10, 16), "p5": (3, 64, 0, 8)}
    locations = get_fpn_location_coords(shapes, FPN_STRIDES, dtype=torch.float64)
    for level in ("p3", "p4"):
        h, w = shapes[level][-2:]
        stride = FPN_STRIDES[level]
        index = torch.arange(h * w)
        expected = torch.stack([(index % w + 0.5) * stride, (index // w + 0.5) * stride], dim=1).double()
        assert locations[level].dtype == torch.float64
        assert_close(locations[level], expected, rtol=0, atol=0)
        # Centres lie inside the (W*stride x H*stride) image.
        assert locations[level][:, 0].max() < w * stride and locations[level][:, 1].max() < h * stride
    assert locations["p5"].shape == (0, 2)
