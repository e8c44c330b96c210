"""IoU and NMS against torchvision.ops (the oracle), plus properties.

The kept sets must be *identical* to ``torchvision.ops.nms`` (not merely
close), including tied scores (the earlier index wins), IoU exactly at the
threshold (not suppressed: the test is strict ``>``), zero-area boxes and
empty input.  Broken variants show that the checks can fail.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.testing import assert_close

import solutions.non_max_suppression as nms_module
from solutions.box_ops import iou
from solutions.non_max_suppression import class_spec_nms, nms

THRESHOLDS = (0.3, 0.5, 0.7)


def random_boxes(n: int, seed: int, *, canvas: int = 100, max_side: int = 30, min_side: int = 1,
                 integer: bool = True, dtype=torch.float32) -> torch.Tensor:
    """The course's check: integer corners on a ``canvas`` px square (``min_side=0`` adds zero-area boxes)."""
    g = torch.Generator().manual_seed(seed)
    if integer:
        xy = torch.randint(0, canvas, (n, 2), generator=g).to(dtype)
        wh = torch.randint(min_side, max_side, (n, 2), generator=g).to(dtype)
    else:
        xy = torch.rand(n, 2, generator=g, dtype=dtype) * canvas
        wh = torch.rand(n, 2, generator=g, dtype=dtype) * max_side
    return torch.cat([xy, xy + wh], dim=1)


def random_scores(n: int, seed: int, *, levels: int | None = None, dtype=torch.float32) -> torch.Tensor:
    """Uniform scores, or ``levels`` distinct values (many ties)."""
    g = torch.Generator().manual_seed(seed + 1000)
    if levels is None:
        return torch.rand(n, generator=g, dtype=dtype)
    return torch.randint(0, levels, (n,), generator=g).to(dtype) / levels


# ---------------------------------------------------------------- IoU


def test_iou_sanity_values():
    boxes1 = torch.tensor([[10.0, 10, 90, 90], [20, 20, 40, 40], [60, 60, 80, 80]])
    boxes2 = torch.tensor([[10.0, 10, 90, 90], [60, 60, 80, 80], [30, 30, 70, 70]])
    expected = torch.tensor([[1.0, 0.0625, 0.25], [0.0625, 0.0, 0.052631579], [0.0625, 1.0, 0.052631579]])
    assert_close(iou(boxes1, boxes2), expected)
    # Transposed arguments give the transposed matrix (catches a (N, M) result).
    assert_close(iou(boxes2, boxes1), expected.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_matches_torchvision_including_degenerate_boxes(dtype):
    boxes1 = random_boxes(300, seed=1, min_side=0, dtype=dtype)
    boxes2 = random_boxes(200, seed=2, min_side=0, integer=False, dtype=dtype)
    boxes1[:5] = boxes1[:5, :2].repeat(1, 2)  # points (zero width and height)
    before1, before2 = boxes1.clone(), boxes2.clone()
    ours = iou(boxes1, boxes2)
    theirs = torchvision.ops.box_iou(boxes1, boxes2)
    assert ours.dtype == dtype and ours.shape == (300, 200)
    # torchvision gives NaN (0/0) where both boxes have zero area; ours gives 0.
    nan = torch.isnan(theirs)
    assert_close(ours[~nan], theirs[~nan])
    assert (ours[nan] == 0).all()
    assert ((ours >= 0) & (ours <= 1)).all()
    assert_close(boxes1, before1, rtol=0, atol=0)
    assert_close(boxes2, before2, rtol=0, atol=0)


def test_iou_empty():
    assert iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    assert iou(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------- NMS oracle


def check_nms_matches_torchvision(fn, boxes, scores, thresholds=THRESHOLDS) -> None:
    for threshold in thresholds:
        ours = fn(boxes, scores, threshold)
        theirs = torchvision.ops.nms(boxes, scores, threshold)
        assert ours.dtype == torch.int64 and ours.device == boxes.device
        assert torch.equal(ours, theirs), f"kept sets differ at IoU {threshold}: {len(ours)} vs {len(theirs)} boxes"


@pytest.mark.parametrize("ties", [None, 7], ids=["distinct-scores", "tied-scores"])
def test_nms_5000_random_boxes_equal_torchvision(ties):
    boxes, scores = random_boxes(5000, seed=3), random_scores(5000, seed=3, levels=ties)
    before = boxes.clone(), scores.clone()
    check_nms_matches_torchvision(nms, boxes, scores)
    assert_close(boxes, before[0], rtol=0, atol=0)
    assert_close(scores, before[1], rtol=0, atol=0)


def test_nms_degenerate_float_and_float64_boxes():
    boxes = random_boxes(1500, seed=4, min_side=0, max_side=6, canvas=20)  # many zero-area boxes and duplicates
    boxes[::50] = boxes[::50, :2].repeat(1, 2)
    check_nms_matches_torchvision(nms, boxes, random_scores(1500, seed=4, levels=3), (0.0, 0.3, 0.5, 0.7, 1.0))
    floats = random_boxes(1200, seed=5, integer=False, dtype=torch.float64)
    check_nms_matches_torchvision(nms, floats, random_scores(1200, seed=5, dtype=torch.float64))


def test_nms_iou_exactly_at_threshold_is_not_suppressed():
    # IoU([0,0,10,10], [0,0,10,5]) = 0.5 exactly; IoU(a, [0,0,10,c]) = c/10 in general.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 3]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]  # box 1 (IoU 0.5) stays, box 2 (0.6 with box 1) goes
    # Thresholds that are not representable in float32 (1/3, 0.3) behave as in torchvision.
    thirds = torch.tensor([[0.0, 0, 3, 3], [0, 0, 3, 1], [0, 0, 3, 0.9], [0, 0, 30, 9]])
    check_nms_matches_torchvision(nms, thirds, torch.tensor([4.0, 3, 2, 1]), (1 / 3, 0.3, 0.29999998))


def test_nms_small_blocks_and_edge_inputs(monkeypatch):
    # Many block boundaries on a small input: the blocked algorithm must not depend on the block size.
    boxes, scores = random_boxes(700, seed=6), random_scores(700, seed=6, levels=5)
    for block in (1, 7, 64):
        monkeypatch.setattr(nms_module, "_NMS_BLOCK", block)
        check_nms_matches_torchvision(nms, boxes, scores)
    monkeypatch.undo()
    empty = nms(torch.zeros(0, 4), torch.zeros(0))
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert nms(torch.tensor([[1.0, 1, 2, 2]]), torch.tensor([0.5])).tolist() == [0]
    # Output is by decreasing score, ties by index.
    keep = nms(boxes, scores, 0.5)
    kept_scores = scores[keep]
    assert (kept_scores[:-1] >= kept_scores[1:]).all()
    same = kept_scores[:-1] == kept_scores[1:]
    assert (keep[:-1][same] < keep[1:][same]).all()


def loop_nms(boxes, scores, threshold, *, ties_suppress=True, later_index_first=False, at_threshold=False):
    """The textbook loop over kept boxes (slow, obviously correct), with switches for plausible bugs:
    equal scores never suppressing each other, ties ranked by the later index, ``>=`` instead of ``>``."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-scores[i].item(), -i if later_index_first else i))
    overlaps = iou(boxes, boxes).double()  # float32 IoU widened, as torchvision compares it
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        over = overlaps[i] >= threshold if at_threshold else overlaps[i] > threshold
        if not ties_suppress:
            over &= scores != scores[i]
        suppressed |= over
    return torch.tensor(keep, dtype=torch.long)


def test_nms_checks_reject_broken_variants():
    boxes, scores = random_boxes(400, seed=7), random_scores(400, seed=7, levels=4)
    check_nms_matches_torchvision(loop_nms, boxes, scores)  # the loop itself is right
    for flag in ("ties_suppress", "later_index_first"):
        def broken(b, s, t, flag=flag):
            return loop_nms(b, s, t, **{flag: flag != "ties_suppress"})

        with pytest.raises(AssertionError):
            check_nms_matches_torchvision(broken, boxes, scores)
    def at_threshold(b, s, t):
        return loop_nms(b, s, t, at_threshold=True)

    with pytest.raises(AssertionError):
        check_nms_matches_torchvision(at_threshold, torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]]),
                                      torch.tensor([0.9, 0.8]), (0.5,))


# ---------------------------------------------------------------- class-specific NMS


def test_class_spec_nms_equals_torchvision_batched_nms():
    boxes = random_boxes(2000, seed=8, canvas=224, max_side=80)
    scores = random_scores(2000, seed=8, levels=50)
    classes = torch.randint(0, 20, (2000,), generator=torch.Generator().manual_seed(8))
    before = classes.clone()
    for threshold in THRESHOLDS:
        ours = class_spec_nms(boxes, scores, classes, threshold)
        theirs = torchvision.ops.batched_nms(boxes, scores, classes, threshold)
        # Same kept set; torchvision's per-class path orders ties arbitrarily (unstable
        # sort), ours by index.
        assert sorted(ours.tolist()) == sorted(theirs.tolist())
        kept_scores = scores[ours]
        assert (kept_scores[:-1] >= kept_scores[1:]).all()
        same = kept_scores[:-1] == kept_scores[1:]
        assert (ours[:-1][same] < ours[1:][same]).all()
    assert torch.equal(classes, before)
    # Identical boxes of different classes are both kept; of the same class only one.
    box = torch.tensor([[10.0, 10, 50, 50]] * 3)
    assert class_spec_nms(box, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0])).tolist() == [0, 1]
    assert class_spec_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_class_spec_nms_float16_shifts_in_float32():
    """float16 boxes with class ids in the hundreds: the class offsets overflow or quantise in float16,
    so the reference shifts in float32 and keeps the same boxes as for the float32 input."""
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(300, 8, canvas=200, max_side=60, min_side=5, integer=False)
    boxes[0] = torch.tensor([0.0, 0.0, 224.0, 224.0])  # spans the image: class offsets of 225 px
    scores = torch.rand(300, generator=g)
    class_ids = torch.randint(280, 300, (300,), generator=g)
    expected = class_spec_nms(boxes.half().float(), scores.half().float(), class_ids, 0.5)
    got = class_spec_nms(boxes.half(), scores.half(), class_ids, 0.5)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)
    assert len(got) < 300  # something was suppressed
