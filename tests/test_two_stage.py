"""Faster R-CNN reference: anchors, matching, deltas, sampling, RPN, RoI pooling and
the order of the second stage's features and targets.

Where cheap, a check is also run on a deliberately broken variant to show that
it can fail (``pytest.raises(AssertionError)``).  Overfit runs on the embedded
dataset live in ``tests/test_two_stage_overfit.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torchvision.ops import box_iou, roi_align

import solutions.faster_rcnn as faster_rcnn_module
import solutions.rpn as rpn_module
from data_utils.conventions import BACKGROUND, NEUTRAL, PADDING, Detections
from solutions.anchors import generate_fpn_anchors
from solutions.backbone import DetectorBackboneWithFPN
from solutions.box_ops import iou
from solutions.faster_rcnn import FasterRCNN, assign_rois_to_fpn_levels, pool_roi_features
from solutions.locations import get_fpn_location_coords
from solutions.rcnn_targets import (
    MAX_LOG_SCALE,
    rcnn_apply_deltas_to_anchors,
    rcnn_get_deltas_from_anchors,
    rcnn_match_anchors_to_gt,
    sample_rpn_training,
)
from solutions.rpn import RPN, RPNPredictionNetwork, flatten_anchor_predictions

STRIDES = {"p3": 8, "p4": 16, "p5": 32}


def random_boxes(n: int, size: float = 224.0, generator: torch.Generator | None = None, dtype=torch.float32,
                 min_side: float = 1.0):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * size * 0.8
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * size * 0.5 + min_side
    return torch.cat([xy, xy + wh], dim=1)


def pad_gt(rows: list[list[float]], total: int = 6) -> torch.Tensor:
    gt = torch.full((total, 5), PADDING)
    if rows:
        gt[: len(rows)] = torch.tensor(rows, dtype=torch.float32)
    return gt


# ---------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------

P5_LOCATIONS = get_fpn_location_coords({"p5": (2, 2)}, {"p5": 32})


def test_anchor_sanity_values_ratio_1_and_0_5():
    square = generate_fpn_anchors(P5_LOCATIONS, {"p5": 32}, stride_scale=2, aspect_ratios=[1.0])["p5"]
    assert_close(square, torch.tensor([[-16.0, -16, 48, 48], [16, -16, 80, 48], [-16, 16, 48, 80], [16, 16, 80, 80]]))
    wide = generate_fpn_anchors(P5_LOCATIONS, {"p5": 32}, stride_scale=2, aspect_ratios=[0.5])["p5"]
    expected_first = torch.tensor([-29.2548, -6.6274, 61.2548, 38.6274])
    assert_close(wide[0], expected_first, atol=1e-4, rtol=0)
    # Width and height swapped (ratio read as w/h) is the classic bug: it gives ratio 2.
    swapped = generate_fpn_anchors(P5_LOCATIONS, {"p5": 32}, stride_scale=2, aspect_ratios=[2.0])["p5"]
    with pytest.raises(AssertionError):
        assert_close(swapped[0], expected_first, atol=1e-4, rtol=0)


def check_anchor_order(anchors: torch.Tensor, locations: torch.Tensor, sizes: torch.Tensor) -> None:
    """Anchor k of location l is row l*A+k: its centre is location l, its size sizes[k]."""
    num_anchors = len(sizes)
    assert anchors.shape == (len(locations) * num_anchors, 4)
    grid = anchors.view(len(locations), num_anchors, 4)
    assert_close((grid[..., :2] + grid[..., 2:]) / 2, locations[:, None, :].expand(-1, num_anchors, -1))
    assert_close(grid[..., 2:] - grid[..., :2], sizes[None].expand(len(locations), -1, -1))


def test_anchor_shapes_and_order_location_major_x_fastest():
    locations = get_fpn_location_coords({"p4": (3, 5)}, {"p4": 16})["p4"]
    anchors = generate_fpn_anchors({"p4": locations}, {"p4": 16}, stride_scale=8, aspect_ratios=[0.5, 1.0, 2.0])["p4"]
    area = (8 * 16) ** 2
    sizes = torch.tensor([[math.sqrt(area / r), area / math.sqrt(area / r)] for r in (0.5, 1.0, 2.0)])
    check_anchor_order(anchors, locations, sizes)
    # x varies fastest: anchors 0..2 at (8, 8), anchors 3..5 at (24, 8), anchor 15 starts row 1.
    assert_close((anchors[3, :2] + anchors[3, 2:]) / 2, torch.tensor([24.0, 8.0]))
    assert_close((anchors[15, :2] + anchors[15, 2:]) / 2, torch.tensor([8.0, 24.0]))
    # Broken variant: anchor-major order (all ratio-0.5 anchors first).
    anchor_major = anchors.view(15, 3, 4).transpose(0, 1).reshape(-1, 4)
    with pytest.raises(AssertionError):
        check_anchor_order(anchor_major, locations, sizes)


def test_anchors_all_levels_float64_and_empty():
    shapes = {"p3": (28, 28), "p4": (14, 14), "p5": (7, 7)}
    locations = get_fpn_location_coords(shapes, STRIDES, dtype=torch.float64)
    anchors = generate_fpn_anchors(locations, STRIDES, stride_scale=8)
    assert {k: tuple(v.shape) for k, v in anchors.items()} == {"p3": (2352, 4), "p4": (588, 4), "p5": (147, 4)}
    assert all(v.dtype == torch.float64 for v in anchors.values())
    side = {level: (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) for level, a in anchors.items()}
    for level, stride in STRIDES.items():
        assert_close(side[level], torch.full_like(side[level], (8.0 * stride) ** 2))
    empty = generate_fpn_anchors({"p3": torch.zeros(0, 2)}, {"p3": 8}, stride_scale=8)["p3"]
    assert empty.shape == (0, 4)


# ---------------------------------------------------------------------------
# IoU (the reference students write in assignment 2) against torchvision
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_matches_torchvision_on_random_boxes(dtype):
    gen = torch.Generator().manual_seed(0)
    boxes1, boxes2 = random_boxes(300, generator=gen, dtype=dtype), random_boxes(200, generator=gen, dtype=dtype)
    assert_close(iou(boxes1, boxes2), box_iou(boxes1, boxes2))


# ---------------------------------------------------------------------------
# Box deltas
# ---------------------------------------------------------------------------

SANITY_ANCHORS = torch.tensor([[20.0, 40, 80, 90], [10, 10, 50, 50], [120, 100, 200, 200]])
SANITY_BOXES = torch.tensor([[10.0, 15, 100, 115, 1], [30, 20, 40, 30, 1], [120, 100, 200, 200, 1]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_iou_half_precision_is_computed_in_float32(dtype):
    """A 200 px box has area 40000: its union with itself overflows float16 (inf -> IoU 0)."""
    box = torch.tensor([[10.0, 12.0, 210.0, 212.0], [0.0, 0.0, 224.0, 224.0]])
    out = iou(box.to(dtype), box.to(dtype))
    assert out.dtype == dtype
    assert_close(out.float(), iou(box.to(dtype).float(), box.to(dtype).float()), atol=1e-2, rtol=0)
    assert torch.equal(out.diagonal().float(), torch.ones(2))
    # ... so an anchor that is a ground-truth box is foreground, not background
    matched = rcnn_match_anchors_to_gt(box.to(dtype), torch.cat([box, torch.tensor([[3.0], [5.0]])], 1).to(dtype), (0.3, 0.6))
    assert matched[:, 4].tolist() == [3.0, 5.0]


def test_rcnn_deltas_sanity_values_and_round_trip():
    deltas = rcnn_get_deltas_from_anchors(SANITY_ANCHORS, SANITY_BOXES)
    expected = torch.tensor([[0.0833, 0.0, 0.4055, 0.6931], [0.1250, -0.1250, -1.3863, -1.3863], [0.0, 0.0, 0.0, 0.0]])
    assert_close(deltas, expected, atol=1e-4, rtol=0)
    assert_close(rcnn_apply_deltas_to_anchors(deltas, SANITY_ANCHORS), SANITY_BOXES[:, :4])
    # Broken variant: (dx, dy) normalised by the box's size instead of the anchor's.
    bw = SANITY_BOXES[:, 2] - SANITY_BOXES[:, 0]
    broken = deltas.clone()
    broken[:, 0] = deltas[:, 0] * (SANITY_ANCHORS[:, 2] - SANITY_ANCHORS[:, 0]) / bw
    with pytest.raises(AssertionError):
        assert_close(broken, expected, atol=1e-4, rtol=0)


def test_rcnn_deltas_round_trip_float64_random_and_batched():
    gen = torch.Generator().manual_seed(1)
    anchors = random_boxes(500, generator=gen, dtype=torch.float64, min_side=8).view(5, 100, 4)
    boxes = random_boxes(500, generator=gen, dtype=torch.float64, min_side=8).view(5, 100, 4)
    deltas = rcnn_get_deltas_from_anchors(anchors, boxes)
    assert deltas.shape == (5, 100, 4) and deltas.dtype == torch.float64
    assert deltas[..., 2:].max() < MAX_LOG_SCALE  # the clamp must not bite here
    assert_close(rcnn_apply_deltas_to_anchors(deltas, anchors), boxes, rtol=0, atol=1e-9)


def test_rcnn_deltas_sentinel_rows_and_empty():
    anchors = SANITY_ANCHORS
    gt = torch.stack([SANITY_BOXES[0], torch.full((5,), BACKGROUND), torch.full((5,), NEUTRAL)])
    deltas = rcnn_get_deltas_from_anchors(anchors, gt)
    assert torch.isfinite(deltas[0]).all()
    assert_close(deltas[1:], torch.full((2, 4), NEUTRAL))
    # 4-column boxes work too.
    assert_close(rcnn_get_deltas_from_anchors(anchors, gt[:, :4]), deltas)
    assert rcnn_get_deltas_from_anchors(torch.zeros(0, 4), torch.zeros(0, 5)).shape == (0, 4)
    assert rcnn_apply_deltas_to_anchors(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_apply_deltas_clamps_a_copy_not_the_callers_tensor():
    deltas = torch.tensor([[0.0, 0.0, 100.0, -100.0], [0.5, -0.5, 10.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 20.0, 30.0, 60.0]])
    deltas_before, anchors_before = deltas.clone(), anchors.clone()
    boxes = rcnn_apply_deltas_to_anchors(deltas, anchors)
    assert torch.equal(deltas, deltas_before) and torch.equal(anchors, anchors_before)
    assert torch.isfinite(boxes).all()
    assert_close(boxes[0, 2] - boxes[0, 0], torch.tensor(10.0 * 224 / 8))  # dw clamped to log(28)
    assert_close(boxes[0, 3] - boxes[0, 1], torch.tensor(10.0 * math.exp(-100)))  # no lower clamp


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------

# Against the box [0, 0, 10, 10], an anchor [0, 0, w, 10] (w <= 10) has IoU w / 10:
# exactly representable inter / union ratios, so "exactly at the threshold" is exact.
def strip_anchors(widths: list[float]) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, w, 10.0] for w in widths])


def test_match_thresholds_inclusive_background_at_low_foreground_at_high():
    gt = pad_gt([[0, 0, 10, 10, 7]])
    widths = [2.0, 3.0, 4.0, 5.9, 6.0, 10.0]  # IoU 0.2, 0.3 (= low), 0.4, 0.59, 0.6 (= high), 1
    matched = rcnn_match_anchors_to_gt(strip_anchors(widths), gt, (0.3, 0.6))
    bg, neutral, fg = [BACKGROUND] * 5, [NEUTRAL] * 5, [0.0, 0, 10, 10, 7]
    assert_close(matched, torch.tensor([bg, bg, neutral, neutral, fg, fg]))
    # Second stage: (0.5, 0.5) has no neutral band, IoU exactly 0.5 is foreground.
    matched = rcnn_match_anchors_to_gt(strip_anchors([4.9, 5.0, 8.0]), gt, (0.5, 0.5))
    assert_close(matched, torch.tensor([bg, fg, fg]))


def test_match_picks_the_best_gt_and_ignores_padding_rows():
    anchors = torch.tensor([[0.0, 0, 10, 10], [100, 100, 150, 150], [300, 300, 310, 310]])
    # Anchor 0: GT 2 is exact.  A row with a negative class is padding whatever its
    # coordinates: the last row covers anchor 2 exactly and must be ignored.
    gt = pad_gt([[0, 0, 10, 11, 3], [98, 98, 150, 150, 12], [0, 0, 10, 10, 5], [300, 300, 310, 310, -1]])
    matched = rcnn_match_anchors_to_gt(anchors, gt, (0.3, 0.6))
    assert_close(matched, torch.tensor([[0.0, 0, 10, 10, 5], [98, 98, 150, 150, 12], [BACKGROUND] * 5]))


def test_match_without_ground_truth_is_all_background():
    anchors = random_boxes(50)
    for gt in (torch.zeros(0, 5), torch.full((40, 5), PADDING)):
        for force in (False, True):
            matched = rcnn_match_anchors_to_gt(anchors, gt, (0.3, 0.6), force_best_match=force)
            assert_close(matched, torch.full((50, 5), BACKGROUND))
    batched = rcnn_match_anchors_to_gt(anchors, torch.zeros(3, 0, 5), (0.3, 0.6))
    assert_close(batched, torch.full((3, 50, 5), BACKGROUND))
    assert rcnn_match_anchors_to_gt(torch.zeros(0, 4), pad_gt([[0, 0, 5, 5, 1]]), (0.3, 0.6)).shape == (0, 5)


def test_match_batched_equals_per_image_and_does_not_mutate():
    gen = torch.Generator().manual_seed(2)
    anchors = random_boxes(300, generator=gen)
    gt = torch.full((4, 8, 5), PADDING)
    for b, count in enumerate([0, 1, 5, 8]):
        gt[b, :count, :4] = random_boxes(count, generator=gen)
        gt[b, :count, 4] = torch.randint(0, 20, (count,), generator=gen).float()
    anchors_before, gt_before = anchors.clone(), gt.clone()
    for force in (False, True):
        batched = rcnn_match_anchors_to_gt(anchors, gt, (0.3, 0.6), force_best_match=force)
        assert batched.shape == (4, 300, 5)
        for b in range(4):
            assert_close(batched[b], rcnn_match_anchors_to_gt(anchors, gt[b], (0.3, 0.6), force_best_match=force))
        # Per-image anchors (the second stage's RoIs) give the same answer.
        per_image = rcnn_match_anchors_to_gt(anchors.expand(4, -1, -1), gt, (0.3, 0.6), force_best_match=force)
        assert_close(per_image, batched)
    assert torch.equal(anchors, anchors_before) and torch.equal(gt, gt_before)
    assert (batched[2, :, 4] >= 0).any() and (batched[0] == BACKGROUND).all()


def test_match_force_best_match_gives_small_objects_an_anchor():
    shapes = {"p3": (28, 28), "p4": (14, 14), "p5": (7, 7)}
    anchors = torch.cat(list(generate_fpn_anchors(get_fpn_location_coords(shapes, STRIDES), STRIDES, 8).values()))
    gt = pad_gt([[100, 100, 116, 116, 4], [10, 10, 200, 200, 9]])  # a 16 px object: IoU < 0.1 with every anchor
    plain = rcnn_match_anchors_to_gt(anchors, gt, (0.3, 0.6))
    assert not (plain[:, 4] == 4).any()
    forced = rcnn_match_anchors_to_gt(anchors, gt, (0.3, 0.6), force_best_match=True)
    overlaps = iou(anchors, gt[:1, :4])[:, 0]
    best = (overlaps == overlaps.max()).nonzero().squeeze(1)
    assert_close(forced[forced[:, 4] == 4], gt[0].expand(len(best), -1))
    assert torch.equal((forced[:, 4] == 4).nonzero().squeeze(1), best)
    # Anchors matched the ordinary way are unchanged.
    ordinary = plain[:, 4] >= 0
    assert_close(forced[ordinary], plain[ordinary])


def test_match_float64():
    gt = pad_gt([[0, 0, 10, 10, 7]]).double()
    matched = rcnn_match_anchors_to_gt(strip_anchors([3.0, 6.0]).double(), gt, (0.3, 0.6))
    assert matched.dtype == torch.float64
    assert_close(matched, torch.tensor([[BACKGROUND] * 5, [0, 0, 10, 10, 7]], dtype=torch.float64))


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


def random_matched(num_images: int, num_anchors: int, fg_prob: float, neutral_prob: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(num_images, num_anchors, generator=gen)
    matched = torch.full((num_images, num_anchors, 5), BACKGROUND)
    fg = u < fg_prob
    matched[fg] = torch.cat([random_boxes(int(fg.sum()), generator=gen),
                             torch.randint(0, 20, (int(fg.sum()), 1), generator=gen).float()], dim=1)
    matched[(u >= fg_prob) & (u < fg_prob + neutral_prob)] = NEUTRAL
    return matched


def check_sample(matched, fg_idx, bg_idx, num_samples, fg_fraction):
    flat = matched.reshape(-1, 5)
    num_anchors = matched.shape[-2]
    assert fg_idx.dtype == torch.long and bg_idx.dtype == torch.long
    assert (flat[fg_idx, 4] >= 0).all(), "a sampled foreground anchor is not foreground"
    assert (flat[bg_idx] == BACKGROUND).all(), "a sampled background anchor is not background (neutral?)"
    both = torch.cat([fg_idx, bg_idx])
    assert len(torch.unique(both)) == len(both), "an anchor was sampled twice"
    classes = flat[:, 4].view(-1, num_anchors)
    for b in range(classes.shape[0]):
        n_fg = int(((fg_idx // num_anchors) == b).sum())
        n_bg = int(((bg_idx // num_anchors) == b).sum())
        avail_fg = int((classes[b] >= 0).sum())
        avail_bg = int((classes[b] == BACKGROUND).sum())
        assert n_fg == min(int(num_samples * fg_fraction), avail_fg)
        assert n_bg == min(num_samples - n_fg, avail_bg)


@pytest.mark.parametrize("num_samples,fg_fraction", [(16, 0.5), (32, 0.25), (7, 0.5), (256, 0.5)])
def test_sampling_respects_fraction_never_neutral_no_duplicates(num_samples, fg_fraction):
    for seed, (fg_prob, neutral_prob) in enumerate([(0.05, 0.3), (0.004, 0.5), (0.6, 0.3), (0.0, 0.2), (0.3, 0.69)]):
        matched = random_matched(4, 500, fg_prob, neutral_prob, seed)
        torch.manual_seed(seed)
        fg_idx, bg_idx = sample_rpn_training(matched, num_samples, fg_fraction)
        check_sample(matched, fg_idx, bg_idx, num_samples, fg_fraction)
        # Unbatched input gives indices into the image's own anchors.
        fg1, bg1 = sample_rpn_training(matched[1], num_samples, fg_fraction)
        check_sample(matched[1:2], fg1, bg1, num_samples, fg_fraction)


def test_sampling_is_seeded_by_the_global_rng_and_random():
    matched = random_matched(2, 1000, 0.1, 0.3, seed=0)
    torch.manual_seed(5)
    first = sample_rpn_training(matched, 16, 0.5)
    torch.manual_seed(5)
    again = sample_rpn_training(matched, 16, 0.5)
    other = sample_rpn_training(matched, 16, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])
    # Not simply the first background anchors: draws spread over the image.
    assert first[1].max() > 200


def test_sampling_broken_variant_is_caught_and_empty_input():
    matched = random_matched(2, 300, 0.05, 0.5, seed=3)

    def neutral_counts_as_background(gt, num_samples, fg_fraction):
        cheat = torch.where(gt == NEUTRAL, torch.full_like(gt, BACKGROUND), gt)
        return sample_rpn_training(cheat, num_samples, fg_fraction)

    with pytest.raises(AssertionError):
        for seed in range(5):
            torch.manual_seed(seed)
            check_sample(matched, *neutral_counts_as_background(matched, 64, 0.5), 64, 0.5)
    fg_idx, bg_idx = sample_rpn_training(torch.zeros(0, 5), 16, 0.5)
    assert fg_idx.shape == (0,) and bg_idx.shape == (0,) and fg_idx.dtype == torch.long


# ---------------------------------------------------------------------------
# RPN head and RPN
# ---------------------------------------------------------------------------


def head_order_is_anchor_order(net: RPNPredictionNetwork, height: int = 3, width: int = 5) -> bool:
    """Feed a map whose channel 0 is the location index; with 1x1 heads reading only
    channel 0, output (l*A + a) must be 100*l + a for objectness and
    100*l + 4a + k for delta k."""
    num_anchors = net.num_anchors
    with torch.no_grad():
        for conv, per_anchor in ((net.pred_obj, 1), (net.pred_box, 4)):
            conv.weight.zero_()
            conv.weight[:, 0] = 100.0
            conv.bias.copy_(torch.arange(num_anchors * per_anchor, dtype=torch.float32))
        feats = torch.zeros(2, net.pred_obj.in_channels, height, width)
        feats[:, 0] = torch.arange(height * width, dtype=torch.float32).view(height, width)
        obj, box = net({"p3": feats})
    loc = torch.arange(height * width).repeat_interleave(num_anchors).float()
    anchor = torch.arange(num_anchors).repeat(height * width).float()
    want_obj = (100 * loc + anchor).expand(2, -1)
    want_box = (100 * loc[:, None] + 4 * anchor[:, None] + torch.arange(4)).expand(2, -1, -1)
    return obj["p3"].shape == want_obj.shape and torch.equal(obj["p3"], want_obj) and torch.equal(box["p3"], want_box)


def test_rpn_head_output_order_matches_anchor_order(monkeypatch):
    net = RPNPredictionNetwork(in_channels=4, stem_channels=[], num_anchors=3)
    assert head_order_is_anchor_order(net)

    def anchor_major(prediction, values_per_anchor):  # the "(B, A, H, W) -> (B, A*H*W)" mistake
        b, c, h, w = prediction.shape
        a = c // values_per_anchor
        return prediction.view(b, a, values_per_anchor, h, w).permute(0, 1, 3, 4, 2).reshape(b, -1, values_per_anchor)

    monkeypatch.setattr(rpn_module, "flatten_anchor_predictions", anchor_major)
    assert not head_order_is_anchor_order(net)


def test_flatten_anchor_predictions_layout():
    x = torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).view(2, 12, 2, 3)  # A=3, K=4, H=2, W=3
    flat = flatten_anchor_predictions(x, 4)
    assert flat.shape == (2, 18, 4)
    b, h, w, a, k = 1, 1, 2, 2, 3
    assert flat[b, (h * 3 + w) * 3 + a, k] == x[b, a * 4 + k, h, w]


@pytest.fixture(scope="module")
def backbone64():
    torch.manual_seed(0)
    return DetectorBackboneWithFPN(64, weights=None)


def test_rpn_head_sizes_at_224(backbone64):
    with torch.no_grad():
        feats = backbone64(torch.randn(2, 3, 224, 224))
    head = RPNPredictionNetwork(64, [64, 64], num_anchors=3)
    obj, box = head(feats)
    assert {k: tuple(v.shape) for k, v in obj.items()} == {"p3": (2, 2352), "p4": (2, 588), "p5": (2, 147)}
    assert {k: tuple(v.shape) for k, v in box.items()} == {"p3": (2, 2352, 4), "p4": (2, 588, 4), "p5": (2, 147, 4)}
    init = head.pred_obj.weight.std().item()
    assert 0.005 < init < 0.02 and head.pred_obj.bias.abs().max() == 0


def test_rpn_defaults_follow_the_course():
    rpn = RPN(64, [64])
    assert rpn.anchor_stride_scale == 8 and rpn.anchor_aspect_ratios == (0.5, 1.0, 2.0)
    assert rpn.anchor_iou_thresholds == (0.3, 0.6) and rpn.nms_thresh == 0.7
    assert (rpn.pre_nms_topk, rpn.post_nms_topk, rpn.batch_size_per_image, rpn.fg_fraction) == (400, 100, 16, 0.5)


def small_gt(batch: int) -> torch.Tensor:
    gt = torch.full((batch, 10, 5), PADDING)
    gt[0, 0] = torch.tensor([5.0, 5, 50, 60, 3])
    if batch > 1:
        gt[1, :2] = torch.tensor([[10.0, 30, 90, 90, 7], [0, 0, 20, 12, 1]])
    return gt  # later images have no objects


def test_rpn_proposals_in_training_and_inference_and_losses(backbone64):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 96, 128)
    with torch.no_grad():
        feats = backbone64(images)
    rpn = RPN(64, [32], pre_nms_topk=50, post_nms_topk=20)
    rpn.train()
    out = rpn(feats, STRIDES)  # training mode, no ground truth: proposals only (course bug 3)
    assert set(out) == {"proposals", "proposal_scores"}
    out = rpn(feats, STRIDES, small_gt(3), image_size=(96, 128))
    assert {"loss_rpn_obj", "loss_rpn_box", "rpn_num_fg"} <= set(out)
    assert out["loss_rpn_obj"].dim() == 0 and torch.isfinite(out["loss_rpn_obj"])
    assert out["loss_rpn_obj"].requires_grad and out["loss_rpn_box"].requires_grad
    (out["loss_rpn_obj"] + out["loss_rpn_box"]).backward()
    assert rpn.pred_net.pred_box.weight.grad.abs().sum() > 0
    rpn.eval()
    out = rpn(feats, STRIDES, image_size=(96, 128))
    assert len(out["proposals"]) == 3
    for boxes, scores in zip(out["proposals"], out["proposal_scores"]):
        assert boxes.shape[1] == 4 and 0 < len(boxes) <= 20 and not boxes.requires_grad
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        assert (scores[:-1] >= scores[1:]).all()


def test_rpn_loss_values_on_a_known_case():
    """All deltas predicted 0, all logits 0: BCE = log 2 per sampled anchor and
    L1 = sum |target deltas| of the sampled foreground."""
    torch.manual_seed(0)
    feats = {k: torch.zeros(2, 8, 64 // s, 64 // s) for k, s in STRIDES.items()}
    rpn = RPN(8, [], batch_size_per_image=64)
    with torch.no_grad():
        for p in rpn.parameters():
            p.zero_()
    gt = torch.full((2, 3, 5), PADDING)
    gt[0, 0] = torch.tensor([8.0, 8, 40, 40, 2])
    out = rpn(feats, STRIDES, gt)
    # Every foreground anchor of image 0 is sampled (there are at most 64 * 0.5 = 32;
    # the 32 px box lies inside many 64 px p3 anchors, which all tie for best IoU 0.25
    # and are all forced positive), topped up with background to 64; image 1: 64
    # background.  Normaliser 64 * 2.
    anchors = torch.cat(list(rpn.get_anchors(feats, STRIDES).values()))
    matched = rcnn_match_anchors_to_gt(anchors, gt[0], (0.3, 0.6), force_best_match=True)
    fg = matched[:, 4] >= 0
    assert 1 <= fg.sum() <= 32
    assert out["rpn_num_fg"].item() == fg.sum().item() / 2
    assert_close(out["loss_rpn_obj"], torch.tensor(math.log(2)))
    expected_box = rcnn_get_deltas_from_anchors(anchors[fg], matched[fg]).abs().sum() / 128
    assert_close(out["loss_rpn_box"], expected_box)


class ScriptedHead(nn.Module):
    """Stands in for the RPN head: fixed logits and deltas."""

    def __init__(self, logits, deltas):
        super().__init__()
        self.logits, self.deltas = logits, deltas

    def forward(self, feats):
        return self.logits, self.deltas


def test_rpn_proposals_come_from_the_right_anchors():
    feats = {k: torch.zeros(2, 8, 64 // s, 64 // s) for k, s in STRIDES.items()}
    rpn = RPN(8, [])
    anchors = rpn.get_anchors(feats, STRIDES)
    logits = {k: torch.full((2, len(a)), -10.0) for k, a in anchors.items()}
    deltas = {k: torch.zeros(2, len(a), 4) for k, a in anchors.items()}
    logits["p4"][0, 13] = 5.0  # image 0: p4 anchor 13 (location 4, ratio 2)
    logits["p3"][1, 100] = 6.0  # image 1: p3 anchor 100, shifted by half its width
    deltas["p3"][1, 100] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    rpn.pred_net = ScriptedHead(logits, deltas)
    proposals = rpn(feats, STRIDES, image_size=(64, 64))["proposals"]

    def clip(b: torch.Tensor) -> torch.Tensor:
        return torch.minimum(b.clamp(min=0), torch.tensor(64.0))

    assert_close(proposals[0][0], clip(anchors["p4"][13]))
    shifted = anchors["p3"][100] + torch.tensor([32.0, 0, 32, 0])
    assert_close(proposals[1][0], clip(shifted))


# ---------------------------------------------------------------------------
# Level assignment and RoI pooling
# ---------------------------------------------------------------------------


def test_level_assignment_rule():
    sides = torch.tensor([0.0, 16, 64, 90, 91, 128, 180, 182, 224])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)
    assert assign_rois_to_fpn_levels(boxes).tolist() == [3, 3, 3, 3, 4, 4, 4, 5, 5]
    # Uses sqrt(w*h): a 64 x 256 box is "128 px".
    assert assign_rois_to_fpn_levels(torch.tensor([[0.0, 0, 64, 256]])).tolist() == [4]
    assert assign_rois_to_fpn_levels(torch.zeros(0, 4)).shape == (0,)


def level_features(batch: int, channels: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    """Feature maps whose value is 10 * image + level everywhere."""
    return {
        level: (10 * torch.arange(batch, dtype=torch.float32)[:, None, None, None] + int(level[1:]))
        .expand(batch, channels, size // s, size // s).contiguous()
        for level, s in STRIDES.items()
    }


def test_pool_roi_features_row_i_is_roi_i():
    gen = torch.Generator().manual_seed(4)
    sides = torch.tensor([20.0, 60, 100, 150, 200, 40, 120, 64, 30, 190] * 3)
    xy = torch.rand(len(sides), 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + sides[:, None]], dim=1)
    image_idx = torch.randint(0, 3, (len(sides),), generator=gen)
    feats = level_features(3, size=256)
    pooled = pool_roi_features(feats, STRIDES, image_idx, boxes, (7, 7))
    assert pooled.shape == (len(sides), 2, 7, 7)
    levels = assign_rois_to_fpn_levels(boxes)
    assert set(levels.tolist()) == {3, 4, 5}
    assert_close(pooled.mean(dim=(1, 2, 3)), 10 * image_idx.float() + levels.float())
    # Oracle: torchvision roi_align one box at a time.
    i = 7
    level = f"p{levels[i]}"
    one = roi_align(feats[level], torch.cat([image_idx[i:i + 1, None].float(), boxes[i:i + 1]], 1), (7, 7),
                    spatial_scale=1 / STRIDES[level], sampling_ratio=2, aligned=True)
    assert_close(pooled[i:i + 1], one)
    assert pool_roi_features(feats, STRIDES, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4)).shape == (0, 2, 7, 7)


# ---------------------------------------------------------------------------
# Faster R-CNN: order of features and targets, protocol, AMP
# ---------------------------------------------------------------------------


class ImageIndexBackbone(nn.Module):
    """Stand-in backbone: every FPN level of image b is the image's own (constant) value."""

    out_channels = 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    @property
    def fpn_strides(self):
        return dict(STRIDES)

    def forward(self, images):
        return {level: self.scale * F.avg_pool2d(images[:, :1], s).expand(-1, self.out_channels, -1, -1)
                for level, s in STRIDES.items()}


def run_and_record(model: FasterRCNN, images, gt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training forward; returns the classifier's input features, and the RoI table."""
    seen = {}
    model.cls_pred.register_forward_pre_hook(lambda module, args: seen.__setitem__("features", args[0].detach()))
    original = model.sample_rois

    def recording(*args):
        seen["table"] = original(*args)
        return seen["table"]

    model.sample_rois = recording
    model(images, gt)
    image_idx, _boxes, targets = seen["table"]
    return seen["features"], image_idx, targets


def ordering_batch():
    """Four images, image b filled with the value b + 1, with objects of one class
    per image and sizes spread over p3/p4/p5."""
    images = (torch.arange(4, dtype=torch.float32) + 1)[:, None, None, None].expand(4, 3, 224, 224).contiguous()
    gt = torch.full((4, 5, 5), PADDING)
    gt[0, :2] = torch.tensor([[10.0, 10, 50, 50, 2], [120, 130, 150, 170, 2]])  # p3
    gt[1, :1] = torch.tensor([[20.0, 30, 140, 150, 9]])  # p4
    gt[2, :2] = torch.tensor([[0.0, 0, 220, 210, 14], [100, 20, 130, 60, 14]])  # p5, p3
    gt[3, :3] = torch.tensor([[5.0, 5, 200, 200, 19], [60, 60, 180, 170, 19], [150, 150, 180, 190, 19]])
    return images, gt


def check_features_match_targets(features, image_idx, targets, gt):
    """Each pooled feature encodes the image it came from; its target must be that
    image's class (+1) or background, and the table's image index must agree."""
    pooled_from = features.mean(dim=(1, 2, 3)).round().long() - 1
    assert torch.equal(pooled_from, image_idx), "feature i was not pooled from the image of RoI i"
    image_class = gt[:, 0, 4].long() + 1
    fg = targets > 0
    assert torch.equal(targets[fg], image_class[pooled_from[fg]]), "a feature was trained on another image's class"
    assert set(pooled_from[fg].tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("seed", [0, 1])
def test_roi_features_and_targets_come_out_in_the_same_order(seed, monkeypatch):
    torch.manual_seed(seed)
    images, gt = ordering_batch()
    model = FasterRCNN(ImageIndexBackbone(), RPN(4, [4], pre_nms_topk=60, post_nms_topk=30), [],
                       num_classes=20, batch_size_per_image=16)
    model.train()
    features, image_idx, targets = run_and_record(model, images, gt)
    check_features_match_targets(features, image_idx, targets, gt)

    def level_major_pool(feats, strides, image_idx, boxes, output_size=(7, 7), sampling_ratio=2):
        # The course's bug: pool level by level and concatenate.
        levels = assign_rois_to_fpn_levels(boxes)
        rois = torch.cat([image_idx[:, None].float(), boxes], dim=1)
        return torch.cat([roi_align(f, rois[levels == int(k[1:])], output_size, 1 / strides[k], sampling_ratio, True)
                          for k, f in feats.items()])

    monkeypatch.setattr(faster_rcnn_module, "pool_roi_features", level_major_pool)
    torch.manual_seed(seed)
    model = FasterRCNN(ImageIndexBackbone(), RPN(4, [4], pre_nms_topk=60, post_nms_topk=30), [],
                       num_classes=20, batch_size_per_image=16)
    features, image_idx, targets = run_and_record(model, images, gt)
    with pytest.raises(AssertionError):
        check_features_match_targets(features, image_idx, targets, gt)


def test_sample_rois_mixes_in_gt_and_respects_the_fraction():
    torch.manual_seed(0)
    model = FasterRCNN(ImageIndexBackbone(), RPN(4, [4]), [], num_classes=20, batch_size_per_image=8)
    proposals = [torch.tensor([[0.0, 0, 30, 30], [100, 100, 200, 200], [12, 10, 52, 50]]), torch.zeros(0, 4)]
    gt = torch.full((2, 4, 5), PADDING)
    gt[0, 0] = torch.tensor([10.0, 10, 50, 50, 6])
    gt[1, :2] = torch.tensor([[0.0, 0, 100, 100, 0], [50, 50, 70, 90, 19]])
    image_idx, boxes, targets = model.sample_rois(proposals, gt)
    # Image 0: foreground = GT itself + the IoU 0.82 proposal, capped at 8 * 0.25 = 2;
    # background = the other two proposals.  Image 1: only its two GT boxes (foreground).
    assert sorted(zip(image_idx.tolist(), targets.tolist())) == [(0, 0), (0, 0), (0, 7), (0, 7), (1, 1), (1, 20)]
    fg1 = (image_idx == 1)
    assert {tuple(b) for b in boxes[fg1].tolist()} == {(0.0, 0, 100, 100), (50.0, 50, 70, 90)}


@pytest.fixture(scope="module")
def small_model(backbone64):
    torch.manual_seed(0)
    return FasterRCNN(backbone64, RPN(64, [32], pre_nms_topk=100, post_nms_topk=30), [32], num_classes=20,
                      batch_size_per_image=16)


def test_faster_rcnn_training_protocol_and_images_without_objects(small_model):
    small_model.train()
    images = torch.randn(3, 3, 96, 96)
    losses = small_model(images, small_gt(3))
    assert {"loss_rpn_obj", "loss_rpn_box", "loss_cls"} <= set(losses)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert total.dim() == 0 and torch.isfinite(total)
    small_model.zero_grad()
    total.backward()
    assert small_model.cls_pred[-1].weight.grad.abs().sum() > 0
    assert small_model.backbone.fpn_params["lateral_p3"].weight.grad.abs().sum() > 0
    # A batch without any object still trains (background only).
    losses = small_model(images[:2], torch.full((2, 40, 5), PADDING))
    assert losses["loss_rpn_box"] == 0 and torch.isfinite(losses["loss_cls"])


def test_faster_rcnn_inference_protocol(small_model):
    small_model.eval()
    images = torch.randn(2, 3, 96, 96)
    dets = small_model.inference(images, score_thresh=0.0, nms_thresh=0.5)
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    for d in dets:
        assert d.boxes.shape[1] == 4 and d.scores.shape == d.classes.shape == (len(d.boxes),)
        assert d.classes.dtype == torch.long and ((d.classes >= 0) & (d.classes < 20)).all()
        assert (d.scores[:-1] >= d.scores[1:]).all() and (d.boxes >= 0).all() and (d.boxes <= 96).all()
    nothing = small_model.inference(images, score_thresh=1.0)
    assert [tuple(d.boxes.shape) for d in nothing] == [(0, 4), (0, 4)] and nothing[0].classes.dtype == torch.long
    # Without ground truth, calling the model runs inference (sensible default, course bug 3).
    assert len(small_model(images)) == 2


def test_faster_rcnn_under_cpu_autocast_bfloat16(small_model):
    small_model.train()
    images = torch.randn(2, 3, 96, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = small_model(images, small_gt(2))
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    small_model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dets = small_model.inference(images, score_thresh=0.0)
    assert len(dets) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_faster_rcnn_on_cuda_with_amp():
    torch.manual_seed(0)
    model = FasterRCNN(DetectorBackboneWithFPN(64, weights=None), RPN(64, [64]), [64], 20, 16).cuda()
    images = torch.randn(2, 3, 224, 224, device="cuda")
    gt = small_gt(2).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        losses = model(images, gt)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.autocast("cuda", dtype=torch.float16):
        dets = model.inference(images, score_thresh=0.0)
    assert dets[0].boxes.device.type == "cuda"
