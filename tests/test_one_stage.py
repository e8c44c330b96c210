"""FCOS (assignment 1): head, targets, losses and inference.

Sanity values the original course printed, an independent per-location Python oracle for
the matching, property tests (dtype, no mutation, empty input, batching,
non-square images) and broken variants that every check must reject.
All models use ``weights=None`` (no download) and small sizes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch.testing import assert_close

from data_utils.conventions import FPN_STRIDES, Detections
from solutions.fcos import FCOS
from solutions.fcos_head import FCOSPredictionNetwork
from solutions.fcos_targets import (
    fcos_apply_deltas_to_locations,
    fcos_get_deltas_from_locations,
    fcos_make_centerness_targets,
    fcos_match_locations_to_gt,
)
from solutions.locations import get_fpn_location_coords

LEVEL_RANGES = {"p3": (0.0, 64.0), "p4": (64.0, 128.0), "p5": (128.0, math.inf)}

# The original course's delta / centerness sanity inputs.
SANITY_BOXES = torch.tensor([[10.0, 15, 100, 115, 1], [30, 20, 40, 30, 1], [120, 100, 200, 200, 1]])
SANITY_LOCATIONS = torch.tensor([[30.0, 40], [32, 29], [125, 150]])


def locations_for(height: int, width: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    shapes = {level: (height // s, width // s) for level, s in FPN_STRIDES.items()}
    return get_fpn_location_coords(shapes, FPN_STRIDES, dtype=dtype)


def random_gt(batch: int, num_rows: int, num_objects: int, seed: int, height=224, width=224) -> torch.Tensor:
    """``(B, N, 5)`` padded gt with objects of every size, padding rows interleaved."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.full((batch, num_rows, 5), -1.0)
    for b in range(batch):
        rows = torch.randperm(num_rows, generator=g)[:num_objects]
        x1 = torch.rand(num_objects, generator=g) * width * 0.8
        y1 = torch.rand(num_objects, generator=g) * height * 0.8
        w = torch.rand(num_objects, generator=g) * (width - x1) + 1
        h = torch.rand(num_objects, generator=g) * (height - y1) + 1
        cls = torch.randint(0, 20, (num_objects,), generator=g).float()
        gt[b, rows] = torch.stack([x1, y1, (x1 + w).clamp(max=width), (y1 + h).clamp(max=height), cls], dim=1)
    return gt


# ---------------------------------------------------------------- head


def test_head_output_shapes_sanity_values():
    torch.manual_seed(0)
    head = FCOSPredictionNetwork(num_classes=20, in_channels=64, stem_channels=[64, 64])
    feats = {level: torch.randn(2, 64, 224 // s, 224 // s) for level, s in FPN_STRIDES.items()}
    cls, box, ctr = head(feats)
    assert {k: tuple(v.shape) for k, v in cls.items()} == {"p3": (2, 784, 20), "p4": (2, 196, 20), "p5": (2, 49, 20)}
    assert {k: tuple(v.shape) for k, v in box.items()} == {"p3": (2, 784, 4), "p4": (2, 196, 4), "p5": (2, 49, 4)}
    assert {k: tuple(v.shape) for k, v in ctr.items()} == {"p3": (2, 784, 1), "p4": (2, 196, 1), "p5": (2, 49, 1)}


def test_head_initialisation():
    torch.manual_seed(0)
    head = FCOSPredictionNetwork(num_classes=20, in_channels=64, stem_channels=[64, 32])
    convs = [m for m in head.stem_cls if isinstance(m, torch.nn.Conv2d)]
    convs += [m for m in head.stem_box if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 32, 64, 32]
    assert sum(isinstance(m, torch.nn.ReLU) for m in head.stem_cls) == 2
    for conv in convs + [head.pred_cls, head.pred_box, head.pred_ctr]:
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        assert 0.008 < conv.weight.std().item() < 0.012 and abs(conv.weight.mean().item()) < 2e-3
    for conv in convs + [head.pred_box, head.pred_ctr]:
        assert (conv.bias == 0).all()
    assert_close(head.pred_cls.bias, torch.full((20,), -math.log(99)))
    assert_close(torch.sigmoid(head.pred_cls.bias), torch.full((20,), 0.01))


def test_head_centerness_reads_box_stem():
    """Changing the class stem moves class logits only; the box stem moves deltas and centerness."""
    torch.manual_seed(0)
    head = FCOSPredictionNetwork(num_classes=3, in_channels=8, stem_channels=[8])
    feats = {"p3": torch.randn(1, 8, 6, 5)}
    cls0, box0, ctr0 = (d["p3"].detach().clone() for d in head(feats))
    with torch.no_grad():
        head.stem_cls[0].weight.mul_(5)
        cls1, box1, ctr1 = (d["p3"] for d in head(feats))
        assert not torch.allclose(cls1, cls0)
        assert_close(box1, box0) and assert_close(ctr1, ctr0)
        head.stem_box[0].weight.mul_(5)
        _, box2, ctr2 = (d["p3"] for d in head(feats))
        assert not torch.allclose(box2, box0) and not torch.allclose(ctr2, ctr0)


def test_head_flattening_matches_location_order():
    """Prediction i of each level belongs to location i (row-major, x fastest), also non-square."""
    head = FCOSPredictionNetwork(num_classes=2, in_channels=2, stem_channels=[])
    with torch.no_grad():  # pred_cls copies its two input channels (centre tap of the 3x3 kernel)
        head.pred_cls.weight.zero_()
        head.pred_cls.bias.zero_()
        head.pred_cls.weight[0, 0, 1, 1] = 1
        head.pred_cls.weight[1, 1, 1, 1] = 1
    feats, locations = {}, locations_for(160, 256)
    for level, stride in FPN_STRIDES.items():
        h, w = 160 // stride, 256 // stride
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        feats[level] = ((torch.stack([cols, rows]).float() + 0.5) * stride)[None].repeat(3, 1, 1, 1)
    cls, _, _ = head(feats)
    for level in FPN_STRIDES:
        assert_close(cls[level], locations[level].expand(3, -1, -1))


# ---------------------------------------------------------------- deltas and centerness


def check_delta_sanity(get_deltas, apply_deltas) -> None:
    deltas = get_deltas(SANITY_LOCATIONS, SANITY_BOXES, 8)
    expected = torch.tensor([[20.0, 25, 70, 75], [2, 9, 8, 1], [5, 50, 75, 50]]) / 8
    assert_close(deltas, expected)
    assert_close(apply_deltas(deltas, SANITY_LOCATIONS, 8), SANITY_BOXES[:, :4], rtol=0, atol=0)
    background = get_deltas(torch.tensor([[100.0, 200]]), torch.full((1, 5), -1.0), 8)
    assert_close(background, torch.full((1, 4), -1.0))
    assert_close(apply_deltas(background, torch.tensor([[100.0, 200]]), 8), torch.tensor([[100.0, 200, 100, 200]]))


def check_centerness_sanity(make_centerness) -> None:
    deltas = fcos_get_deltas_from_locations(SANITY_LOCATIONS[:2], SANITY_BOXES[:2], 8)
    deltas = torch.cat([deltas, torch.full((1, 4), -1.0)])
    assert_close(make_centerness(deltas), torch.tensor([0.30860671401, 0.1666666716, -1.0]))


def deltas_xy_swapped(locations, gt_boxes, stride):
    return fcos_get_deltas_from_locations(locations.flip(-1), gt_boxes[..., [1, 0, 3, 2]], stride)


def apply_deltas_xy_swapped(deltas, locations, stride):
    return fcos_apply_deltas_to_locations(deltas[..., [1, 0, 3, 2]], locations, stride)


def centerness_zero_background(deltas):
    return fcos_make_centerness_targets(deltas).clamp(min=0)


def centerness_without_sqrt(deltas):
    ctr = fcos_make_centerness_targets(deltas)
    return torch.where(ctr < 0, ctr, ctr**2)


def test_delta_round_trip_and_centerness_sanity_values():
    check_delta_sanity(fcos_get_deltas_from_locations, fcos_apply_deltas_to_locations)
    check_centerness_sanity(fcos_make_centerness_targets)


def test_delta_and_centerness_checks_reject_broken_variants():
    with pytest.raises(AssertionError):
        check_delta_sanity(deltas_xy_swapped, fcos_apply_deltas_to_locations)
    with pytest.raises(AssertionError):
        check_delta_sanity(fcos_get_deltas_from_locations, apply_deltas_xy_swapped)
    for broken in (centerness_zero_background, centerness_without_sqrt):
        with pytest.raises(AssertionError):
            check_centerness_sanity(broken)


def test_deltas_batched_float64_no_mutation_and_empty():
    locations = locations_for(224, 224, dtype=torch.float64)["p4"]  # (196, 2)
    gt = random_gt(3, 40, 6, seed=1).double()
    matched = fcos_match_locations_to_gt({"p4": locations}, {"p4": 16}, gt)["p4"]  # (3, 196, 5)
    copies = locations.clone(), matched.clone()
    deltas = fcos_get_deltas_from_locations(locations, matched, 16)  # broadcast (196, 2) against (3, 196, 5)
    assert deltas.shape == (3, 196, 4) and deltas.dtype == torch.float64
    for b in range(3):  # leading batch dims are just broadcasting
        assert_close(deltas[b], fcos_get_deltas_from_locations(locations, matched[b, :, :4], 16))
    foreground = matched[..., 4] >= 0
    assert foreground.any() and (~foreground).any()
    assert (deltas[~foreground] == -1).all() and (deltas[foreground] > 0).all()
    boxes = fcos_apply_deltas_to_locations(deltas, locations, 16)
    assert boxes.dtype == torch.float64
    assert_close(boxes[foreground], matched[..., :4][foreground])
    centerness = fcos_make_centerness_targets(deltas)
    assert centerness.shape == (3, 196) and centerness.dtype == torch.float64
    assert (centerness[~foreground] == -1).all()
    assert ((centerness[foreground] > 0) & (centerness[foreground] <= 1)).all()
    assert_close(locations, copies[0], rtol=0, atol=0)
    assert_close(matched, copies[1], rtol=0, atol=0)
    # Empty input -> empty output of the right shape.
    assert fcos_get_deltas_from_locations(torch.zeros(0, 2), torch.zeros(0, 5), 8).shape == (0, 4)
    assert fcos_apply_deltas_to_locations(torch.zeros(2, 0, 4), torch.zeros(0, 2), 8).shape == (2, 0, 4)
    assert fcos_make_centerness_targets(torch.zeros(0, 4)).shape == (0,)


def test_apply_deltas_clamps_without_touching_the_callers_tensor():
    deltas = torch.tensor([[-2.0, 1, 3, -0.5]])
    before = deltas.clone()
    boxes = fcos_apply_deltas_to_locations(deltas, torch.tensor([[50.0, 60]]), torch.tensor([[16.0]]))
    assert_close(boxes, torch.tensor([[50.0, 44, 98, 60]]))
    assert_close(deltas, before, rtol=0, atol=0)


# ---------------------------------------------------------------- matching


def match_oracle(locations_per_level, strides, gt_boxes, prefer_largest=False):
    """Per-location Python loop straight from the docstring (independent of the reference).

    ``prefer_largest=True`` is a broken variant: ties go to the largest box.
    """
    out = {}
    strides_sorted = sorted(strides.values())
    for level, locations in locations_per_level.items():
        s = strides[level]
        lower = 0.0 if s == strides_sorted[0] else 4.0 * s
        upper = math.inf if s == strides_sorted[-1] else 8.0 * s
        rows = []
        for xc, yc in locations.tolist():
            best, best_key = None, math.inf
            for row in gt_boxes.tolist():
                x1, y1, x2, y2, c = row
                if c < 0:
                    continue
                ltrb = (xc - x1, yc - y1, x2 - xc, y2 - yc)
                key = (x2 - x1) * (y2 - y1) * (-1 if prefer_largest else 1)
                if min(ltrb) > 0 and lower <= max(ltrb) < upper and key < best_key:
                    best, best_key = row, key
            rows.append(best if best is not None else [-1.0] * 5)
        out[level] = torch.tensor(rows, dtype=gt_boxes.dtype).reshape(-1, 5)
    return out


def match_largest_area(locations, strides, gt_boxes):
    """Broken: ties go to the largest box."""
    return match_oracle(locations, strides, gt_boxes, prefer_largest=True)


def match_transposed_locations(locations, strides, gt_boxes):
    """Broken: locations generated y-fastest (the course notebook's bug)."""
    transposed = {}
    for level, loc in locations.items():
        side = int(round(loc.shape[0] ** 0.5))
        transposed[level] = loc.reshape(side, side, 2).transpose(0, 1).reshape(-1, 2)
    return fcos_match_locations_to_gt(transposed, strides, gt_boxes)


def match_inclusive_both_bounds(locations, strides, gt_boxes):
    """Broken: the course's strict ``lower < m < upper`` ranges (objects of size exactly 64 fall between levels)."""
    out = fcos_match_locations_to_gt(locations, strides, gt_boxes)
    for level, matched in out.items():
        loc = locations[level]
        ltrb = torch.cat([loc - matched[..., :2], matched[..., 2:4] - loc], -1)
        lower = 0.0 if level == "p3" else 4.0 * strides[level]
        on_lower = (ltrb.amax(-1) == lower) & (matched[..., 4] >= 0)
        out[level] = torch.where(on_lower[..., None], torch.full_like(matched, -1), matched)
    return out


def check_matching(match_fn, gt_boxes: torch.Tensor) -> None:
    locations = locations_for(224, 224)
    expected = match_oracle(locations, FPN_STRIDES, gt_boxes)
    got = match_fn(locations, FPN_STRIDES, gt_boxes)
    assert list(got) == list(expected)
    for level in expected:
        assert_close(got[level], expected[level], rtol=0, atol=0, msg=f"level {level}")


def edge_case_gt() -> torch.Tensor:
    """Padding first, nested boxes (smallest wins), equal-area duplicates, exact level boundaries."""
    return torch.tensor([
        [-1.0, -1, -1, -1, -1],            # padding before real rows
        [0, 0, 224, 224, 0],                # whole image: p5 everywhere, loses to anything smaller
        [8, 8, 120, 120, 1],                # medium box containing the next one
        [16, 16, 48, 48, 2],                # small nested box: wins over rows 1 and 2
        [16, 16, 48, 48, 3],                # same area as row 3: row 3 (earlier) wins
        [100, 150, 228, 214, 4],            # p3 location (164, 180): m = 64 -> not on p3
        [180, 8, 212, 100, 5],              # border: locations with x = 180, x = 212 or y = 8 are not inside
        [-1, -1, -1, -1, -1],
    ])


def test_matching_sanity_and_edge_cases_equal_oracle():
    gt = edge_case_gt()
    check_matching(fcos_match_locations_to_gt, gt)
    matched = fcos_match_locations_to_gt(locations_for(224, 224), FPN_STRIDES, gt)
    p3_locations = locations_for(224, 224)["p3"]
    # Location (28, 28) on p3 qualifies for rows 3 and 4 only (equal areas) -> row 3, class 2.
    i = ((p3_locations[:, 0] == 28) & (p3_locations[:, 1] == 28)).nonzero().item()
    assert matched["p3"][i, 4] == 2
    # Location (104, 104) on p4 qualifies for rows 1 (m = 120) and 2 (m = 96) -> the smaller row 2.
    p4_locations = locations_for(224, 224)["p4"]
    k = ((p4_locations[:, 0] == 104) & (p4_locations[:, 1] == 104)).nonzero().item()
    assert matched["p4"][k, 4] == 1
    # m exactly 64 belongs to p4, not p3 (ranges are [lower, upper)): p3 location (164, 180) in row 5
    # has ltrb (64, 30, 64, 34) and is background; p4 location (72, 72) in row 2 has ltrb (64, 64, 48, 48).
    j = ((p3_locations[:, 0] == 164) & (p3_locations[:, 1] == 180)).nonzero().item()
    assert (matched["p3"][j] == -1).all()
    j = ((p4_locations[:, 0] == 72) & (p4_locations[:, 1] == 72)).nonzero().item()
    assert matched["p4"][j, 4] == 1
    j = ((p4_locations[:, 0] == 168) & (p4_locations[:, 1] == 184)).nonzero().item()
    assert matched["p4"][j, 4] == 4  # row 5 again, m = 68
    # No location on the border of row 6 is matched to it.
    for level, loc in locations_for(224, 224).items():
        on_border = (loc[:, 0] == 180) | (loc[:, 0] == 212) | (loc[:, 1] == 8)
        assert (matched[level][on_border, 4] != 5).all()
    # Rows are copied whole: a background row is all -1, a matched row is a real object row.
    for level in matched:
        background = matched[level][:, 4] < 0
        assert (matched[level][background] == -1).all()
        real_rows = gt[gt[:, 4] >= 0]
        assert ((matched[level][~background][:, None] == real_rows[None]).all(-1).sum(-1) >= 1).all()


def test_matching_level_boundaries_exactly():
    """A single location at (xc, yc) = (100, 100) and boxes whose max distance is exactly 64 / 128."""
    loc = {"p3": torch.tensor([[100.0, 100]]), "p4": torch.tensor([[100.0, 100]]), "p5": torch.tensor([[100.0, 100]])}
    for m, level in ((63.5, "p3"), (64.0, "p4"), (127.0, "p4"), (128.0, "p5"), (500.0, "p5")):
        gt = torch.tensor([[100 - m, 90.0, 110, 110, 7]])
        matched = fcos_match_locations_to_gt(loc, FPN_STRIDES, gt)
        assert [lv for lv in matched if matched[lv][0, 4] == 7] == [level], (m, level)
    # The ranges follow the levels given: the coarsest level has no upper bound, the finest no lower one.
    only_p4 = fcos_match_locations_to_gt({"p4": loc["p4"]}, {"p4": 16}, torch.tensor([[100 - 300.0, 90, 110, 110, 7]]))
    assert only_p4["p4"][0, 4] == 7


def test_matching_checks_reject_broken_variants():
    gt = edge_case_gt()
    for broken in (match_largest_area, match_transposed_locations, match_inclusive_both_bounds):
        with pytest.raises(AssertionError):
            check_matching(broken, gt)


@pytest.mark.parametrize("height, width", [(224, 224), (160, 256)])
def test_batched_matching_equals_per_image_and_oracle(height, width):
    locations = locations_for(height, width)
    gt = random_gt(3, 40, 8, seed=height, height=height, width=width)
    gt[2] = -1  # an image without objects
    before = gt.clone()
    batched = fcos_match_locations_to_gt(locations, FPN_STRIDES, gt)
    for level, loc in locations.items():
        assert batched[level].shape == (3, loc.shape[0], 5) and batched[level].dtype == gt.dtype
        assert (batched[level][2] == -1).all()
    for b in range(3):
        single = fcos_match_locations_to_gt(locations, FPN_STRIDES, gt[b])
        oracle = match_oracle(locations, FPN_STRIDES, gt[b]) if b < 2 else None
        for level in locations:
            assert single[level].shape == (locations[level].shape[0], 5)
            assert_close(batched[level][b], single[level], rtol=0, atol=0)
            if oracle is not None:
                assert_close(single[level], oracle[level], rtol=0, atol=0)
    assert_close(gt, before, rtol=0, atol=0)
    assert sum(int((batched[lv][:2, :, 4] >= 0).sum()) for lv in batched) > 50  # the test is not vacuous


def test_matching_empty_inputs_and_float64():
    locations = locations_for(224, 224, dtype=torch.float64)
    no_rows = fcos_match_locations_to_gt(locations, FPN_STRIDES, torch.zeros(2, 0, 5, dtype=torch.float64))
    assert no_rows["p3"].shape == (2, 784, 5) and (no_rows["p3"] == -1).all()
    assert no_rows["p3"].dtype == torch.float64
    single = fcos_match_locations_to_gt(locations, FPN_STRIDES, torch.zeros(0, 5))
    assert single["p5"].shape == (49, 5) and single["p5"].dtype == torch.float32
    no_images = fcos_match_locations_to_gt(locations, FPN_STRIDES, torch.zeros(0, 40, 5))
    assert no_images["p4"].shape == (0, 196, 5)
    no_locations = fcos_match_locations_to_gt({"p3": torch.zeros(0, 2)}, {"p3": 8}, random_gt(2, 5, 3, seed=0))
    assert no_locations["p3"].shape == (2, 0, 5)


# ---------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model() -> FCOS:
    torch.manual_seed(0)
    return FCOS(num_classes=20, fpn_channels=32, stem_channels=[32, 32], weights=None)


def sample_batch(batch: int, height: int = 224, width: int = 224, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=g)
    gt = random_gt(batch, 40, 6, seed=seed, height=height, width=width)
    return images, gt


def test_fcos_training_losses_finite_with_gradients(model):
    images, gt = sample_batch(2)
    before = images.clone(), gt.clone()
    model.train()
    model.zero_grad()
    losses = model(images, gt)
    assert {"loss_cls", "loss_box", "loss_ctr"} <= set(losses)
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value.dtype == torch.float32
        assert value.requires_grad == name.startswith("loss_"), name
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    for param in (model.pred_net.pred_cls.weight, model.pred_net.pred_box.weight, model.pred_net.pred_ctr.weight,
                  model.pred_net.stem_cls[0].weight, model.backbone.fpn_params["output_p3"].weight,
                  model.backbone.stem[0].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert_close(images, before[0], rtol=0, atol=0)
    assert_close(gt, before[1], rtol=0, atol=0)


def test_fcos_normalizer_is_an_ema_buffer(model):
    images, gt = sample_batch(2, seed=1)
    assert "normalizer" in model.state_dict()
    model.normalizer.fill_(150.0)
    model.train()
    losses = model(images, gt)
    num_pos = losses["num_pos"].item()
    assert num_pos > 0
    assert_close(model.normalizer.item(), 0.9 * 150 + 0.1 * num_pos)
    assert_close(losses["normalizer"].item(), 0.9 * 150 + 0.1 * num_pos)
    frozen = model.normalizer.clone()
    model.eval()
    with torch.no_grad():
        model(images, gt)
    assert_close(model.normalizer, frozen, rtol=0, atol=0)  # eval losses do not update it
    model.normalizer.fill_(150.0)


def test_fcos_loss_at_init_matches_its_analytic_value(model):
    """At initialisation every class logit is ~ -log(99) and every box / centerness output ~ 0, so

    loss_cls ~ (P * a(1-p)^2 (-log p) + (L*C - P) * (1-a) p^2 (-log(1-p))) / (norm * B), p = 0.01, a = 0.25
    loss_ctr ~ P * log 2 / (norm * B)      loss_box ~ 0.25 * sum |target deltas| / (norm * B)

    with P the positives of the batch.  (For the course's overfit batch this
    gives the reference 0.698 / 0.43 the original course printed at iteration 0, with P/B ~ 88.)
    Mean instead of sum, a missing normalizer or losses on background
    locations all miss these values by far more than the tolerance.
    """
    images, gt = sample_batch(2, seed=2)
    model.eval()
    model.normalizer.fill_(150.0)
    with torch.no_grad():
        losses = model(images, gt)
        locations = locations_for(224, 224)
        matched = fcos_match_locations_to_gt(locations, FPN_STRIDES, gt)
        deltas = torch.cat([fcos_get_deltas_from_locations(locations[lv], matched[lv], FPN_STRIDES[lv])
                            for lv in matched], dim=1)
    positives = (deltas[..., 0] >= 0).sum().item()
    norm = 150.0 * 2
    p, a, num_cells = 0.01, 0.25, 2 * 1029 * 20
    expected_cls = (positives * a * (1 - p) ** 2 * -math.log(p)
                    + (num_cells - positives) * (1 - a) * p**2 * -math.log(1 - p)) / norm
    expected_ctr = positives * math.log(2) / norm
    expected_box = 0.25 * deltas[deltas[..., 0] >= 0].sum().item() / norm
    assert positives == 2 * losses["num_pos"].item() and positives > 20
    assert_close(losses["loss_cls"].item(), expected_cls, rtol=0.1, atol=0)
    assert_close(losses["loss_ctr"].item(), expected_ctr, rtol=0.1, atol=0)
    assert_close(losses["loss_box"].item(), expected_box, rtol=0.1, atol=0)
    assert 0.1 < losses["loss_cls"].item() < 5 and 0.1 < losses["loss_box"].item() < 20


def test_fcos_loss_of_a_batch_is_the_mean_of_per_image_losses(model):
    model.eval()  # fixed normalizer and batch-norm statistics
    images, gt = sample_batch(3, height=160, width=256, seed=3)
    with torch.no_grad():
        batch = model(images, gt)
        singles = [model(images[b:b + 1], gt[b:b + 1]) for b in range(3)]
    for name in ("loss_cls", "loss_box", "loss_ctr"):
        assert_close(batch[name], torch.stack([s[name] for s in singles]).mean(), rtol=1e-4, atol=1e-6)


def test_fcos_losses_without_objects(model):
    """A batch of padding only: background-only focal loss, zero box/centerness losses, no NaN."""
    model.train()
    model.normalizer.fill_(150.0)
    images = torch.randn(2, 3, 96, 128)
    losses = model(images, torch.full((2, 40, 5), -1.0))
    assert losses["num_pos"].item() == 0
    assert torch.isfinite(losses["loss_cls"]) and 0 < losses["loss_cls"].item() < 0.01
    assert losses["loss_box"].item() == 0 and losses["loss_ctr"].item() == 0
    assert_close(model.normalizer.item(), 0.9 * 150.0)
    model.normalizer.fill_(150.0)


def test_fcos_losses_under_autocast_are_float32(model):
    model.train()
    images, gt = sample_batch(1, height=96, width=128, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, gt)
    for name in ("loss_cls", "loss_box", "loss_ctr"):
        assert losses[name].dtype == torch.float32 and torch.isfinite(losses[name])
    model.normalizer.fill_(150.0)


def _confident_model(model: FCOS) -> FCOS:
    """A copy whose head gives varied classes and scores and large boxes, so that
    class-specific NMS and clipping have work to do."""
    import copy

    confident = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in [m for m in confident.pred_net.modules() if isinstance(m, torch.nn.Conv2d)]:
            fan_in = conv.in_channels * 9
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()
        confident.pred_net.pred_cls.weight.mul_(4.0)
        confident.pred_net.pred_box.bias.fill_(3.0)
        confident.pred_net.pred_ctr.bias.fill_(2.0)
    return confident


def reference_postprocess(model: FCOS, images, score_thresh, nms_thresh) -> list[Detections]:
    """Per image, per level, with torchvision.ops.batched_nms: an independent decoding."""
    with torch.no_grad():
        feats = model.backbone(images)
        cls, box, ctr = model.pred_net(feats)
    out = []
    height, width = images.shape[-2:]
    for b in range(images.shape[0]):
        all_boxes, all_scores, all_classes = [], [], []
        for level, stride in FPN_STRIDES.items():
            h, w = feats[level].shape[-2:]
            for i in range(h * w):
                xc, yc = stride * (i % w + 0.5), stride * (i // w + 0.5)
                probs = (torch.sigmoid(cls[level][b, i]) * torch.sigmoid(ctr[level][b, i])).sqrt()
                score, c = probs.max(0)
                if score > score_thresh:
                    left, t, r, btm = (box[level][b, i].clamp(min=0) * stride).tolist()
                    all_boxes.append([min(max(xc - left, 0), width), min(max(yc - t, 0), height),
                                      min(max(xc + r, 0), width), min(max(yc + btm, 0), height)])
                    all_scores.append(score)
                    all_classes.append(c)
        boxes = torch.tensor(all_boxes).reshape(-1, 4)
        scores = torch.stack(all_scores) if all_scores else torch.zeros(0)
        classes = torch.stack(all_classes) if all_classes else torch.zeros(0, dtype=torch.long)
        keep = torchvision.ops.batched_nms(boxes, scores, classes, nms_thresh)
        out.append(Detections(boxes[keep], scores[keep], classes[keep]))
    return out


@pytest.mark.parametrize("batch, height, width", [(1, 224, 224), (3, 160, 256)])
def test_fcos_inference_matches_independent_postprocessing(model, batch, height, width):
    confident = _confident_model(model)
    images, _ = sample_batch(batch, height, width, seed=5)
    before = images.clone()
    detections = confident.inference(images, score_thresh=0.6, nms_thresh=0.5)
    expected = reference_postprocess(confident, images, 0.6, 0.5)
    assert_close(images, before, rtol=0, atol=0)
    assert isinstance(detections, list) and len(detections) == batch
    total = 0
    for det, ref in zip(detections, expected):
        assert isinstance(det, Detections)
        assert det.boxes.dtype == torch.float32 and det.scores.dtype == torch.float32
        assert det.classes.dtype == torch.int64
        assert ((det.classes >= 0) & (det.classes < 20)).all()
        assert (det.scores[:-1] >= det.scores[1:]).all() and (det.scores > 0.6).all()
        assert (det.boxes[:, 0::2] >= 0).all() and (det.boxes[:, 0::2] <= width).all()
        assert (det.boxes[:, 1::2] >= 0).all() and (det.boxes[:, 1::2] <= height).all()
        # Same detections as the independent decoding, as sets: torchvision orders tied scores
        # differently.  Pair each of ours with an unused reference detection that agrees.
        assert len(det.scores) == len(ref.scores)
        agree = ((det.scores[:, None] - ref.scores[None]).abs() < 1e-5) \
            & (det.classes[:, None] == ref.classes[None]) \
            & ((det.boxes[:, None] - ref.boxes[None]).abs().amax(-1) < 1e-3)
        unused = torch.ones(len(ref.scores), dtype=torch.bool)
        for row in agree:
            candidates = (row & unused).nonzero()
            assert len(candidates) > 0, "a detection has no counterpart in the independent decoding"
            unused[candidates[0, 0]] = False
        for c in det.classes.unique():  # class-specific NMS really ran
            same = det.boxes[det.classes == c]
            overlap = torchvision.ops.box_iou(same, same).fill_diagonal_(0)
            assert (overlap <= 0.5).all()
        total += len(det.scores)
    # The checks saw real work: detections, boxes clipped at the right/bottom edges (W, H not swapped).
    assert total > 5
    every = torch.cat([d.boxes for d in detections])
    assert every[:, 2].max() == width and every[:, 3].max() == height


def test_fcos_inference_at_init_and_empty_batch(model):
    model.eval()
    images, _ = sample_batch(2, seed=6)
    detections = model.inference(images)  # default thresholds: nothing clears 0.3 at initialisation
    assert [d.boxes.shape for d in detections] == [(0, 4), (0, 4)]
    assert model.inference(torch.zeros(0, 3, 64, 64)) == []
