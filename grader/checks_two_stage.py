"""Hidden checks of the two-stage assignment (Faster R-CNN).

Same conventions as :mod:`grader.checks_one_stage`: seeded inputs, reference
outputs computed in the grader's process, messages that name the likely
mistake without printing inputs or expected values.
"""

from __future__ import annotations

import math

import torch

from data_utils.conventions import FPN_STRIDES
from grader.checks import (
    Check,
    Job,
    call_check,
    call_spec,
    close_to,
    gen,
    init_verdict,
    level_shapes,
    mutation_check_of,
    rand_boxes,
    rand_gt,
    run_reference,
)
from grader.compare import Verdict, close, compare_tree, devices_ok
from grader.functions import reference
from grader.judges import judge_samples, shape_tree, shape_verdict
from grader.registry import CHECK_SUITES

A = "two_stage"
NEUTRAL = -1e8


def _locations(shapes: dict, dtype=torch.float32) -> dict:
    return reference("get_fpn_location_coords")(shapes, {k: FPN_STRIDES[k] for k in shapes}, dtype=dtype)


# ---------------------------------------------------------------------------
# flatten_anchor_predictions and RPNPredictionNetwork
# ---------------------------------------------------------------------------


def _anchor_major_diag(num_anchors: int, values: int):
    def diagnose(out, ref):
        if not isinstance(out, torch.Tensor) or out.numel() != ref.numel():
            return None
        b = ref.shape[0]
        hw = ref.shape[1] // num_anchors
        anchor_major = ref.reshape(b, hw, num_anchors, values).transpose(1, 2).reshape(ref.shape)
        if close(out.reshape(ref.shape), anchor_major):
            return "anchor-major order: the A anchors of one location must be contiguous (row (h*W + w)*A + a)"
        return "rows must be ordered (h*W + w)*A + a and channel a*K + k must hold value k of anchor a"

    return diagnose


def _flatten_checks() -> list[Check]:
    f = "flatten_anchor_predictions"

    def spec(seed, a, k, h, w, b=2):
        return call_spec(f, torch.randn(b, a * k, h, w, generator=gen(seed)), k)

    return [
        call_check(A, f"{f}/k4", f, "3 anchors x 4 values, non-square map", lambda: spec(61, 3, 4, 3, 5), diagnose=_anchor_major_diag(3, 4)),
        call_check(A, f"{f}/k1_two_anchors", f, "2 anchors x 1 value", lambda: spec(62, 2, 1, 4, 2, b=3), diagnose=_anchor_major_diag(2, 1)),
    ]


def _rpn_head_checks() -> list[Check]:
    f = "RPNPredictionNetwork"

    def init_make():
        spec = {"op": "module", "name": f, "ctor_args": [16, [16]], "ctor_kwargs": {"num_anchors": 3}, "seed": 0,
                "return": ["init_state_dict", "structure"]}

        def judge(values):
            value = values[0]
            verdict = init_verdict(value["init_state_dict"], {}, 1, value["structure"])
            if not verdict.passed:
                return verdict
            ones = [r for r in value["structure"] if r["type"] == "Conv2d" and tuple(r["kernel"]) == (1, 1)]
            if len(ones) != 2:
                return Verdict(False, f"expected two 1x1 prediction convs (objectness and box deltas), found {len(ones)}")
            return Verdict(True)

        return Job([spec], judge)

    def forward_make():
        torch.manual_seed(0)
        ref = reference(f)(16, [16, 16], num_anchors=3)
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(0, 0.3)
        g = gen(63)
        shapes = {"p3": (2, 16, 6, 5), "p4": (2, 16, 3, 3), "p5": (2, 16, 2, 2)}
        feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
        spec = {"op": "module", "name": f, "ctor_args": [16, [16, 16]], "ctor_kwargs": {"num_anchors": 3}, "seed": 0,
                "state_dict": dict(ref.state_dict()), "calls": [{"method": "forward", "args": [feats], "no_grad": True}]}
        with torch.no_grad():
            expected = ref(feats)

        def judge(values):
            value = values[0]
            if value.get("load_error"):
                return Verdict(False, "could not load weights of the expected layout (stem_rpn: Conv2d + ReLU per stem layer; "
                                      "pred_obj, pred_box: 1x1 convs): " + value["load_error"].splitlines()[0][:300])
            out = value["outputs"][0]
            verdict = compare_tree(out, tuple(expected), atol=1e-5, rtol=1e-4)
            if verdict.passed:
                return verdict
            if isinstance(out, (list, tuple)) and len(out) == 2:
                for level, r in expected[0].items():
                    o = out[0].get(level) if isinstance(out[0], dict) else None
                    if isinstance(o, torch.Tensor) and not close(o, r):
                        diag = _anchor_major_diag(3, 1)(o.reshape(r.shape[0], -1, 1), r.reshape(r.shape[0], -1, 1))
                        return Verdict(False, f"objectness[{level!r}]: " + (diag or verdict.message))
                for level, r in expected[1].items():
                    o = out[1].get(level) if isinstance(out[1], dict) else None
                    if isinstance(o, torch.Tensor) and not close(o, r):
                        return Verdict(False, f"box deltas[{level!r}]: " + (_anchor_major_diag(3, 4)(o, r) or verdict.message))
            return verdict

        return Job([spec], judge)

    def configs_make():
        g = gen(64)
        specs, expected = [], []
        for ctor, kwargs, batch in (([8, []], {"num_anchors": 2}, 1), ([8, [8, 8]], {"num_anchors": 1}, 3)):
            feats = {"p4": torch.randn(batch, 8, 3, 5, generator=g), "p5": torch.randn(batch, 8, 2, 3, generator=g)}
            spec = {"op": "module", "name": f, "ctor_args": ctor, "ctor_kwargs": kwargs, "seed": 0,
                    "calls": [{"method": "forward", "args": [feats], "no_grad": True}]}
            specs.append(spec)
            expected.append(shape_tree(run_reference(A, spec)["outputs"]))

        def judge(values):
            for value, exp in zip(values, expected):
                verdict = shape_verdict(value["outputs"], exp, "output")
                if not verdict.passed:
                    return Verdict(False, verdict.message + " (empty stem / 2 anchors, or two stem layers / 1 anchor)")
            return Verdict(True)

        return Job(specs, judge)

    return [
        Check(f"{f}/init", f, "initialisation: N(0, 0.01) weights, zero biases; 3x3 stem, two 1x1 prediction convs", False, init_make),
        Check(f"{f}/forward_same_weights", f, "outputs with given weights (anchor order of the flattened predictions)", False, forward_make),
        Check(f"{f}/other_configs", f, "other stems, numbers of anchors, levels and batch sizes", False, configs_make),
    ]


# ---------------------------------------------------------------------------
# Anchors
# ---------------------------------------------------------------------------


def _anchor_diag(locations, strides, scale, ratios):
    def diagnose(out, ref):
        if not isinstance(out, dict):
            return None
        swapped = reference("generate_fpn_anchors")(locations, strides, scale, [1.0 / r for r in ratios])
        for level, r in ref.items():
            o = out.get(level)
            if not isinstance(o, torch.Tensor) or o.shape != r.shape or close(o, r, atol=1e-3):
                continue
            if close(o, swapped[level], atol=1e-3):
                return f"{level}: width and height look swapped: the aspect ratio is height / width, so w = sqrt(area / ratio), h = area / w"
            a = len(ratios)
            if close(o, r.view(-1, a, 4).transpose(0, 1).reshape(-1, 4), atol=1e-3):
                return f"{level}: anchors must be location-major: the {a} anchors of one location are consecutive rows"
            centres = (o[:, :2] + o[:, 2:]) / 2
            if not close(centres, ((r[:, :2] + r[:, 2:]) / 2), atol=1e-3):
                return f"{level}: anchors must be centred on their locations"
            return f"{level}: anchor sizes differ: area = (stride_scale * stride)^2 for every ratio"
        return None

    return diagnose


def _anchor_checks() -> list[Check]:
    f = "generate_fpn_anchors"
    shapes = {"p3": (1, 1, 5, 7), "p4": (1, 1, 3, 4), "p5": (1, 1, 2, 2)}
    ratios = [0.5, 1.0, 2.0]

    def levels():
        return call_spec(f, _locations(shapes), FPN_STRIDES, 8, ratios)

    def other():
        return call_spec(f, _locations({"p4": (1, 1, 3, 2)}), {"p4": 16}, 4, [0.25, 1.0, 3.0, 4.0])

    return [
        call_check(A, f"{f}/all_levels", f, "three non-square levels, stride_scale 8, ratios (0.5, 1, 2)", levels,
                   atol=1e-3, diagnose=_anchor_diag(_locations(shapes), FPN_STRIDES, 8, ratios)),
        call_check(A, f"{f}/other_ratios", f, "four other aspect ratios, stride_scale 4", other, atol=1e-3,
                   diagnose=_anchor_diag(_locations({"p4": (1, 1, 3, 2)}), {"p4": 16}, 4, [0.25, 1.0, 3.0, 4.0])),
        call_check(A, f"{f}/float64", f, "float64 locations give float64 anchors",
                   lambda: call_spec(f, _locations(shapes, torch.float64), FPN_STRIDES, 8, ratios), atol=1e-6),
        call_check(A, f"{f}/empty_level", f, "a level without locations gives (0, 4)",
                   lambda: call_spec(f, {"p3": torch.zeros(0, 2)}, {"p3": 8}, 8, ratios)),
        call_check(A, f"{f}/cuda", f, "CUDA locations", levels, cuda=True, atol=1e-3),
        mutation_check_of(f"{f}/no_mutation", f, levels, ["locations_per_fpn_level", "strides_per_fpn_level", "stride_scale", "aspect_ratios"]),
    ]


# ---------------------------------------------------------------------------
# IoU
# ---------------------------------------------------------------------------


def _iou_diag(b1, b2):
    def diagnose(out, ref):
        if not isinstance(out, torch.Tensor):
            return None
        if out.shape == ref.T.shape and out.shape != ref.shape:
            return "the output is transposed: out[i, j] = IoU(boxes1[i], boxes2[j]), shape (M, N)"
        if out.shape != ref.shape:
            return None
        x1, y1 = torch.maximum(b1[:, None, 0], b2[None, :, 0]), torch.maximum(b1[:, None, 1], b2[None, :, 1])
        x2, y2 = torch.minimum(b1[:, None, 2], b2[None, :, 2]), torch.minimum(b1[:, None, 3], b2[None, :, 3])
        inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        a1 = ((b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1]))[:, None]
        a2 = ((b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1]))[None, :]
        if close(out, inter / (a1 + a2).clamp(min=1e-9), atol=1e-4):
            return "the union looks wrong: union = area1 + area2 - intersection"
        if (close(out, inter / torch.maximum(a1, a2).clamp(min=1e-9), atol=1e-4)
                or close(out, inter / torch.minimum(a1, a2).clamp(min=1e-9), atol=1e-4)):
            return "divided by one box's area instead of the union"
        inter1 = (x2 - x1 + 1).clamp(min=0) * (y2 - y1 + 1).clamp(min=0)
        a1p = ((b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1))[:, None]
        a2p = ((b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1))[None, :]
        if close(out, inter1 / (a1p + a2p - inter1), atol=1e-4):
            return "uses a +1 pixel convention: boxes are continuous, width = x2 - x1"
        if bool(((x2 < x1) | (y2 < y1)).any()) and close(out[(x2 >= x1) & (y2 >= y1)], ref[(x2 >= x1) & (y2 >= y1)], atol=1e-4):
            return "disjoint boxes must have IoU 0: clamp the intersection's width and height at 0"
        return None

    return diagnose


def _iou_checks() -> list[Check]:
    f = "iou"
    g = gen(71)
    b1, b2 = rand_boxes(g, 120, max_frac=0.5), rand_boxes(g, 90, max_frac=0.5)
    crafted1 = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 100, 100], [50, 50, 60, 60]])
    crafted2 = torch.tensor([[10.0, 0, 20, 10], [0, 0, 10, 10], [25, 25, 35, 35], [200, 200, 210, 220]])
    zero1 = torch.tensor([[5.0, 5, 5, 5], [0, 0, 10, 10], [3, 3, 3, 9]])
    zero2 = torch.tensor([[5.0, 5, 5, 5], [2, 2, 2, 2], [0, 0, 4, 4]])

    def empty_make():
        specs = [call_spec(f, torch.zeros(0, 4), b2[:5]), call_spec(f, b1[:4], torch.zeros(0, 4))]
        expected = [run_reference(A, s)["output"] for s in specs]

        def judge(values):
            for value, exp in zip(values, expected):
                out = value["output"]
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(exp.shape):
                    return Verdict(False, f"empty input must give an empty (M, N) tensor of shape {tuple(exp.shape)}")
            return Verdict(True)

        return Job(specs, judge)

    return [
        call_check(A, f"{f}/random", f, "120 x 90 random boxes", lambda: call_spec(f, b1, b2), diagnose=_iou_diag(b1, b2),
                   hint="IoU = intersection / (area1 + area2 - intersection)"),
        call_check(A, f"{f}/touching_nested_identical", f, "touching, nested, identical and far-apart boxes",
                   lambda: call_spec(f, crafted1, crafted2), diagnose=_iou_diag(crafted1, crafted2)),
        call_check(A, f"{f}/zero_area", f, "zero-area boxes give 0, not NaN", lambda: call_spec(f, zero1, zero2),
                   diagnose=lambda out, ref: ("pairs with an empty union must have IoU 0 (not NaN)"
                                              if isinstance(out, torch.Tensor) and bool(torch.isnan(out).any()) else None)),
        Check(f"{f}/empty", f, "no boxes on one side gives an empty (M, N) matrix", False, empty_make),
        call_check(A, f"{f}/float64", f, "float64 boxes", lambda: call_spec(f, b1.double(), b2.double()), atol=1e-9, rtol=1e-9),
        call_check(A, f"{f}/cuda", f, "CUDA boxes", lambda: call_spec(f, b1, b2), cuda=True),
        mutation_check_of(f"{f}/no_mutation", f, lambda: call_spec(f, b1[:30], b2[:20]), ["boxes1", "boxes2"]),
    ]


# ---------------------------------------------------------------------------
# Matching, deltas, sampling
# ---------------------------------------------------------------------------


def _match_diag(out, ref):
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return None
    rc, oc = ref[..., 4], out[..., 4]
    if bool(((rc == NEUTRAL) & (oc == -1)).any()):
        return "anchors with low < IoU < high must be neutral (rows of -1e8), not background"
    if bool(((rc == -1) & (oc == NEUTRAL)).any()):
        return "anchors with IoU <= low must be background (rows of -1)"
    if bool(((rc < 0) & (oc >= 0)).any()) and not bool(((rc >= 0) & (oc < 0)).any()):
        return "some anchors are foreground that should not be (padding rows must be ignored; IoU >= high only)"
    if bool(((rc >= 0) & (oc < 0)).any()):
        return "some anchors with IoU >= high (with a real box) are not foreground"
    return "matched rows differ: each foreground anchor gets the whole (x1, y1, x2, y2, class) row of its best box"


FORCE_RULE = ("force_best_match=True: for each ground-truth box, the anchor(s) with the largest IoU with it are foreground "
              "too, matched to that box, even when that IoU is below the high threshold (the Faster R-CNN rule that gives "
              "small objects a positive anchor)")


def _force_diag(anchors: torch.Tensor, gt: torch.Tensor, thresholds):
    """Diagnosis of the force_best_match check: recognise the ordinary rule applied without it."""
    def diagnose(out, ref):
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            return None
        without = reference("rcnn_match_anchors_to_gt")(anchors, gt, thresholds, False)
        if close(out, without):
            return f"force_best_match is ignored: {FORCE_RULE}"
        if bool(((ref[..., 4] >= 0) & (out[..., 4] < 0)).any()):
            return f"the best anchor of a ground-truth box is not foreground: {FORCE_RULE}"
        return f"{_match_diag(out, ref)} ({FORCE_RULE})"

    return diagnose


def _match_checks() -> list[Check]:
    f = "rcnn_match_anchors_to_gt"

    def anchors(seed, n=300):
        return rand_boxes(gen(seed), n, min_size=20.0, max_frac=0.6)

    def batched():
        return call_spec(f, anchors(81), rand_gt(gen(82), 2, [5, 2], 7), (0.3, 0.6))

    def thresholds():
        a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
        a[1] += 100
        a[2] += 200
        a[3] += 300
        gt = torch.tensor([[0.0, 0, 10, 6, 3], [100, 100, 110, 103, 4], [200, 200, 210, 204.5, 5], [300, 300, 310, 309, 6]])
        return call_spec(f, a, gt, (0.3, 0.6))

    def per_image():
        g = gen(84)
        rois = torch.stack([rand_boxes(g, 50, min_size=10.0), rand_boxes(g, 50, min_size=10.0)])
        gt = rand_gt(g, 2, [3, 4], 5)
        rois[0, :3] = gt[0, :3, :4]  # ground truth among the RoIs, as in the second stage
        return call_spec(f, rois, gt, (0.5, 0.5))

    force_anchors = torch.tensor([[0.0, 0, 64, 64], [32, 0, 96, 64], [100, 100, 164, 164]])
    force_gt = torch.tensor([[40.0, 10, 60, 30, 7], [-1, -1, -1, -1, -1]])

    def force():
        return call_spec(f, force_anchors, force_gt, (0.3, 0.6), True)

    return [
        call_check(A, f"{f}/random_batched", f, "random anchors, batched ground truth with padding", batched, diagnose=_match_diag),
        call_check(A, f"{f}/unbatched", f, "(A, 4) anchors with one image's (N, 5) boxes",
                   lambda: call_spec(f, anchors(83), rand_gt(gen(85), 1, [4], 6)[0], (0.3, 0.6)), diagnose=_match_diag),
        call_check(A, f"{f}/exact_thresholds", f, "IoU exactly low is background, exactly high is foreground", thresholds,
                   diagnose=_match_diag, hint="IoU <= low: background; low < IoU < high: neutral; IoU >= high: foreground"),
        call_check(A, f"{f}/per_image_anchors", f, "(B, A, 4) anchors (the second stage's RoIs), thresholds (0.5, 0.5)", per_image,
                   diagnose=_match_diag),
        call_check(A, f"{f}/all_padding", f, "only padding rows: every anchor is background",
                   lambda: call_spec(f, anchors(86, 50), torch.full((2, 3, 5), -1.0), (0.3, 0.6)), diagnose=_match_diag),
        call_check(A, f"{f}/empty_gt", f, "zero ground-truth rows: every anchor is background",
                   lambda: call_spec(f, anchors(87, 40), torch.zeros(2, 0, 5), (0.3, 0.6)), diagnose=_match_diag),
        call_check(A, f"{f}/force_best_match", f, "force_best_match makes the best anchor of a small box foreground", force,
                   diagnose=_force_diag(force_anchors, force_gt, (0.3, 0.6))),
        call_check(A, f"{f}/float64", f, "float64 inputs",
                   lambda: call_spec(f, anchors(88).double(), rand_gt(gen(89), 2, [3, 5], 6, dtype=torch.float64), (0.3, 0.6)),
                   diagnose=_match_diag),
        mutation_check_of(f"{f}/no_mutation", f, batched, ["anchors", "gt_boxes", "iou_thresholds"]),
    ]


def _rcnn_deltas_diag(out, ref):
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return None
    real = ~(ref == NEUTRAL).all(-1)
    if close_to(out[real], ref[real][..., [1, 0, 3, 2]]):
        return "x and y look swapped: deltas are (dx, dy, dw, dh) = ((bx - px) / pw, (by - py) / ph, log(bw / pw), log(bh / ph))"
    if close_to(out[real][..., :2], ref[real][..., :2]) and close_to(out[real][..., 2:], ref[real][..., 2:].exp()):
        return "dw and dh are logarithms: log(bw / pw), log(bh / ph)"
    if close_to(out[real], ref[real]) and not close_to(out[~real], ref[~real]):
        return "rows of background or neutral anchors must be all -1e8"
    return None


def _delta_checks() -> list[Check]:
    f, fa = "rcnn_get_deltas_from_anchors", "rcnn_apply_deltas_to_anchors"

    def pairs(seed, n=60, dtype=torch.float32):
        g = gen(seed)
        anchors = rand_boxes(g, n, min_size=10.0, dtype=dtype)
        boxes = torch.cat([rand_boxes(g, n, min_size=5.0, dtype=dtype), torch.randint(0, 20, (n, 1), generator=g).to(dtype)], 1)
        return anchors, boxes

    def sentinels():
        anchors, boxes = pairs(92)
        boxes[::3] = -1.0
        boxes[1::5] = NEUTRAL
        return call_spec(f, anchors, boxes)

    def batched():
        g = gen(93)
        anchors = rand_boxes(g, 40, min_size=10.0)
        boxes = torch.cat([rand_boxes(g, 80, min_size=5.0).view(2, 40, 4), torch.ones(2, 40, 1)], -1)
        boxes[0, ::4] = -1.0
        return call_spec(f, anchors, boxes)

    def deltas(seed, big=False, dtype=torch.float32):
        g = gen(seed)
        d = (torch.randn(50, 4, generator=g, dtype=torch.float64) * 0.5).to(dtype)
        if big:
            d[::3, 2:] = 10.0
        return call_spec(fa, d, rand_boxes(g, 50, min_size=10.0, dtype=dtype))

    def apply_batched():
        g = gen(97)
        return call_spec(fa, torch.randn(2, 30, 4, generator=g) * 0.3, rand_boxes(g, 30, min_size=10.0))

    return [
        call_check(A, f"{f}/random", f, "random anchors and boxes", lambda: call_spec(f, *pairs(91)), diagnose=_rcnn_deltas_diag, atol=1e-4),
        call_check(A, f"{f}/sentinels", f, "background and neutral rows give rows of -1e8", sentinels, diagnose=_rcnn_deltas_diag, atol=1e-4),
        call_check(A, f"{f}/broadcast_batch", f, "(A, 4) anchors with (B, A, 5) boxes", batched, diagnose=_rcnn_deltas_diag, atol=1e-4),
        call_check(A, f"{f}/float64", f, "float64 inputs", lambda: call_spec(f, *pairs(94, dtype=torch.float64)), diagnose=_rcnn_deltas_diag),
        mutation_check_of(f"{f}/no_mutation", f, sentinels, ["anchors", "gt_boxes"]),
        call_check(A, f"{fa}/random", fa, "random deltas", lambda: deltas(95), atol=1e-3,
                   hint="x = px + dx * pw, w = pw * exp(dw), boxes as (cx - w/2, cy - h/2, cx + w/2, cy + h/2)"),
        call_check(A, f"{fa}/clamp", fa, "large dw, dh are clamped to log(224 / 8)", lambda: deltas(96, big=True), atol=1e-3,
                   diagnose=lambda out, ref: ("dw and dh must be clamped to at most log(224 / 8) before exp"
                                              if isinstance(out, torch.Tensor) and out.shape == ref.shape
                                              and float(out.abs().max()) > 2 * float(ref.abs().max()) else None)),
        call_check(A, f"{fa}/broadcast_batch", fa, "(B, A, 4) deltas with (A, 4) anchors", apply_batched, atol=1e-3),
        call_check(A, f"{fa}/float64", fa, "float64 inputs", lambda: deltas(98, dtype=torch.float64), atol=1e-6),
        mutation_check_of(f"{fa}/no_mutation", fa, lambda: deltas(99, big=True), ["deltas", "anchors"],
                          title="clamping works on a copy (the caller's deltas are unchanged)"),
    ]


def _sample_checks() -> list[Check]:
    f = "sample_rpn_training"

    def matched(num_fg, num_bg, num_neutral, seed, batch=None):
        rows = torch.cat([torch.full((num_fg, 5), 3.0), torch.full((num_bg, 5), -1.0), torch.full((num_neutral, 5), NEUTRAL)])
        rows[:num_fg, :4] = torch.tensor([10.0, 10, 50, 50])
        perm = torch.randperm(len(rows), generator=gen(seed))
        rows = rows[perm]
        if batch:
            other = rows[torch.randperm(len(rows), generator=gen(seed + 1))]
            rows = torch.stack([rows, other])
        return rows

    def check(check_id, title, m, n, fraction):
        def make():
            spec = call_spec(f, m(), n, fraction)
            expected = run_reference(A, spec)["output"]
            return Job([spec], lambda values: judge_samples(values[0]["output"], expected, spec["args"][0]))

        return Check(f"{f}/{check_id}", f, title, False, make)

    def batched_make():
        m = matched(20, 100, 30, 103, batch=True)
        spec = call_spec(f, m, 32, 0.5)
        expected = run_reference(A, spec)["output"]

        def judge(values):
            out = values[0]["output"]
            verdict = judge_samples(out, expected, m)
            if not verdict.passed:
                return Verdict(False, verdict.message + " (batched input: indices into the B * A flattened anchors, quotas per image)")
            per_image = m.shape[1]
            for b in range(2):
                for got, want, name in ((out[0], expected[0], "foreground"), (out[1], expected[1], "background")):
                    if int(((got // per_image) == b).sum()) != int(((want // per_image) == b).sum()):
                        return Verdict(False, f"image {b}: wrong number of {name} samples: quotas apply per image")
            return Verdict(True)

        return Job([spec], judge)

    def random_make():
        m = matched(50, 200, 20, 104)
        specs = [{**call_spec(f, m, 32, 0.5), "seed": s} for s in (1, 2)]

        def judge(values):
            a, b = values[0]["output"], values[1]["output"]
            try:
                same = torch.equal(a[0].sort().values, b[0].sort().values) and torch.equal(a[1].sort().values, b[1].sort().values)
            except (TypeError, IndexError, AttributeError, RuntimeError):
                return Verdict(False, "expected (fg_idx, bg_idx) tensors")
            if same:
                return Verdict(False, "the same anchors were drawn under two different random seeds: sample at random "
                                      "(torch.randperm / torch.rand), not the first ones")
            return Verdict(True)

        return Job(specs, judge)

    return [
        check("many_foreground", "more foreground than the quota: 25% of 64", lambda: matched(100, 200, 50, 101), 64, 0.25),
        check("few_candidates", "fewer candidates than samples: take them all, never neutral ones", lambda: matched(3, 5, 60, 102), 32, 0.5),
        Check(f"{f}/batched", f, "batched (B, A, 5) input: flattened indices, quotas per image", False, batched_make),
        Check(f"{f}/random", f, "samples differ between random seeds", False, random_make),
        mutation_check_of(f"{f}/no_mutation", f, lambda: call_spec(f, matched(10, 40, 10, 105), 16, 0.5), ["gt_boxes", "num_samples", "fg_fraction"]),
    ]


# ---------------------------------------------------------------------------
# RPN
# ---------------------------------------------------------------------------


def _rpn_setup(seed: int, height: int = 96, width: int = 128, batch: int = 2, anchors: int = 3):
    g = gen(seed)
    shapes = level_shapes(batch, 8, height, width)
    feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    obj = {k: torch.randn(batch, s[2] * s[3] * anchors, generator=g) * 2 for k, s in shapes.items()}
    box = {k: torch.randn(batch, s[2] * s[3] * anchors, 4, generator=g) * 0.2 for k, s in shapes.items()}
    replace = {"pred_net": {"__harness__": "fixed_outputs", "outputs": (obj, box)}}
    return feats, replace, g


def _rpn_spec(replace, calls, batch_size_per_image=100000, device="cpu", **ctor_kwargs):
    return {"op": "module", "name": "RPN", "ctor_args": [8, [8]], "ctor_kwargs": {"batch_size_per_image": batch_size_per_image, **ctor_kwargs},
            "seed": 0, "stub_classes": ["RPNPredictionNetwork"], "replace": replace, "calls": calls, "device": device}


def _scalar_losses_judge(expected, keys, hints, device="cpu", known=()):
    """``known``: ``(expected outputs, message)`` of known mistakes, named when every loss matches them."""
    def judge(values):
        outputs = values[0]["outputs"]
        for alternative, message in known:
            if isinstance(outputs, list) and len(outputs) == len(alternative) and all(
                    isinstance(out, dict) and all(isinstance(out.get(k), torch.Tensor) and out[k].numel() == 1
                                                  and close(out[k].reshape(()), alt[k].reshape(()), atol=1e-7, rtol=1e-3)
                                                  for k in keys)
                    for out, alt in zip(outputs, alternative)) and not all(
                    close(out[k].reshape(()), exp[k].reshape(()), atol=1e-7, rtol=1e-3) for out, exp in zip(outputs, expected) for k in keys):
                return Verdict(False, message)
        matched, total, problem = 0, 0, None
        for out, exp in zip(outputs, expected):
            if not isinstance(out, dict):
                return Verdict(False, f"expected a dict, got {type(out).__name__}")
            for key in keys:
                total += 1
                value = out.get(key)
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    problem = problem or f"{key} missing or not a scalar tensor"
                elif close(value.reshape(()), exp[key].reshape(()), atol=1e-7, rtol=1e-3):
                    matched += 1
                else:
                    v, e = float(value), float(exp[key])
                    err = abs(v - e) / max(1e-12, abs(v) + abs(e))
                    problem = problem or f"{key} differs from the expected value (rel error {err:.1e}): {hints.get(key, '')}"
        if matched == total:
            return devices_ok(values[0].get("devices", []), device) if device != "cpu" else Verdict(True)
        return Verdict(False, problem or "losses differ", fraction=matched / max(1, total))

    return judge


RPN_HINTS = {
    "loss_rpn_obj": "BCE-with-logits of the sampled anchors' objectness (foreground 1, background 0), summed, divided by batch_size_per_image * B; "
                    "anchors matched with force_best_match=self.force_best_match",
    "loss_rpn_box": "L1 between predicted and target deltas of the sampled foreground anchors, summed, divided by batch_size_per_image * B",
    "loss_cls": "cross-entropy over C + 1 classes (0 = background) of the sampled RoIs, averaged; features and targets must be in the same order",
}


def _proposal_judge(expected_lists, image_size):
    def judge(values):
        out = values[0]["outputs"][0]
        if not isinstance(out, dict) or "proposals" not in out:
            return Verdict(False, "RPN forward must return a dict with 'proposals' and 'proposal_scores'")
        proposals, scores = out.get("proposals"), out.get("proposal_scores")
        exp_p, exp_s = expected_lists
        if not isinstance(proposals, (list, tuple)) or len(proposals) != len(exp_p):
            return Verdict(False, f"'proposals' must be a list of {len(exp_p)} tensors (one per image)")
        if not isinstance(scores, (list, tuple)) or len(scores) != len(exp_s):
            return Verdict(False, f"'proposal_scores' must be a list of {len(exp_s)} tensors (one per image)")
        for i, (p, s, ep, es) in enumerate(zip(proposals, scores, exp_p, exp_s)):
            if not isinstance(p, torch.Tensor) or not isinstance(s, torch.Tensor):
                return Verdict(False, "proposals and scores must be tensors")
            if p.shape != ep.shape:
                return Verdict(False, f"image {i}: {tuple(p.shape)} proposals, expected {tuple(ep.shape)} "
                                      "(pre-NMS top-k per level, min size, NMS per level, post-NMS top-k)")
            if len(p) and (float(p.min()) < -1e-4 or float(p[:, 2].max()) > image_size[1] + 1e-3 or float(p[:, 3].max()) > image_size[0] + 1e-3):
                return Verdict(False, f"image {i}: proposals must be clipped to the image")
            order_o = torch.sort(s.double(), descending=True, stable=True).indices
            order_e = torch.sort(es.double(), descending=True, stable=True).indices
            if not close(s[order_o], es[order_e], atol=1e-5, rtol=1e-4):
                return Verdict(False, f"image {i}: proposal scores differ (sigmoid of the objectness logits)")
            if not close(p[order_o], ep[order_e], atol=1e-3, rtol=1e-4):
                return Verdict(False, f"image {i}: proposal boxes differ (decode with rcnn_apply_deltas_to_anchors, clip, then NMS)")
        return Verdict(True)

    return judge


def _rpn_checks() -> list[Check]:
    f = "RPN"

    def losses_make(device="cpu"):
        feats, replace, g = _rpn_setup(111)
        gt = rand_gt(g, 2, [4, 2], 6, width=128, height=96)
        gt[0, 0] = torch.tensor([4.0, 6, 120, 90, 2])
        calls = [{"method": "forward", "train": True, "args": [feats, FPN_STRIDES, gt], "kwargs": {"image_size": (96, 128)}}]
        spec = _rpn_spec(replace, calls, device=device)
        expected = run_reference(A, {**spec, "device": "cpu"})["outputs"]
        without = run_reference(A, _rpn_spec(replace, calls, force_best_match=False))["outputs"]
        known = [(without, "the losses are those of anchors matched without force_best_match: call rcnn_match_anchors_to_gt(..., "
                           f"force_best_match=self.force_best_match) (True by default); {FORCE_RULE}")]
        return Job([spec], _scalar_losses_judge(expected, ("loss_rpn_obj", "loss_rpn_box"), RPN_HINTS, device, known))

    def sampled_make():
        # Constant objectness logits: every sampled anchor adds log(2) to the BCE, so
        # loss_rpn_obj counts the samples, whichever the random draw picks.
        feats, replace, g = _rpn_setup(114)
        obj, box = replace["pred_net"]["outputs"]
        replace = {"pred_net": {"__harness__": "fixed_outputs", "outputs": ({k: torch.zeros_like(v) for k, v in obj.items()}, box)}}
        gt = rand_gt(g, 2, [3, 2], 5, width=128, height=96)
        calls = [{"method": "forward", "train": True, "args": [feats, FPN_STRIDES, gt], "kwargs": {"image_size": (96, 128)}}]
        spec = _rpn_spec(replace, calls, batch_size_per_image=16)
        expected = run_reference(A, spec)["outputs"]

        def judge(values):
            out = values[0]["outputs"][0]
            value = out.get("loss_rpn_obj") if isinstance(out, dict) else None
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                return Verdict(False, "loss_rpn_obj missing or not a scalar tensor")
            got, want = float(value), float(expected[0]["loss_rpn_obj"])
            if abs(got - want) <= 1e-4 * abs(want):
                return Verdict(True)
            if abs(got - want / 2) <= 1e-4 * abs(want):
                return Verdict(False, "half the expected anchors were sampled: batch_size_per_image anchors are drawn per image "
                                      "(pass the (B, A, 5) matched boxes to sample_rpn_training), not over the whole flattened batch")
            return Verdict(False, "loss_rpn_obj with constant objectness logits (log(2) per sampled anchor) differs: draw "
                                  "batch_size_per_image anchors per image with sample_rpn_training, divide by batch_size_per_image * B")

        return Job([spec], judge)

    def padding_make():
        feats, replace, g = _rpn_setup(112)
        calls = [{"method": "forward", "train": True, "args": [feats, FPN_STRIDES, torch.full((2, 4, 5), -1.0)], "kwargs": {"image_size": (96, 128)}}]
        spec = _rpn_spec(replace, calls)
        expected = run_reference(A, spec)["outputs"]
        return Job([spec], _scalar_losses_judge(expected, ("loss_rpn_obj", "loss_rpn_box"), RPN_HINTS))

    def proposals_make():
        feats, replace, g = _rpn_setup(113)
        calls = [{"method": "forward", "train": False, "no_grad": True, "args": [feats, FPN_STRIDES], "kwargs": {"image_size": (96, 128)}}]
        spec = _rpn_spec(replace, calls, batch_size_per_image=16)
        out = run_reference(A, spec)["outputs"][0]
        return Job([spec], _proposal_judge((out["proposals"], out["proposal_scores"]), (96, 128)))

    return [
        Check(f"{f}/losses_fixed_predictions", f, "objectness and box losses with fixed predictions (every anchor sampled)", False, losses_make),
        Check(f"{f}/losses_all_padding", f, "losses when the ground truth is only padding", False, padding_make),
        Check(f"{f}/losses_sampled_per_image", f, "batch_size_per_image 16: anchors sampled per image (constant objectness)",
              False, sampled_make),
        Check(f"{f}/proposals_fixed_predictions", f, "proposals and their scores with fixed predictions", False, proposals_make),
        Check(f"{f}/cuda_losses", f, "losses on CUDA", False, lambda: losses_make("cuda"), cuda=True),
    ]


# ---------------------------------------------------------------------------
# RoI levels and pooling
# ---------------------------------------------------------------------------


def _roi_checks() -> list[Check]:
    f, fp = "assign_rois_to_fpn_levels", "pool_roi_features"
    half = 64 * math.sqrt(2)

    def random_boxes():
        g = gen(121)
        return call_spec(f, rand_boxes(g, 200, min_size=2.0, max_frac=0.95))

    def boundaries():
        sides = [half - 0.01, half + 0.01, 2 * half - 0.01, 2 * half + 0.01, 1.0, 500.0]
        return call_spec(f, torch.tensor([[0.0, 0.0, s, s] for s in sides] + [[0.0, 0.0, 50.0, 200.0], [7.0, 7.0, 7.0, 7.0]]))

    def pool_spec(seed, n=40, dtype=torch.float32):
        g = gen(seed)
        feats = {k: torch.randn(2, 4, 224 // s, 224 // s, generator=g, dtype=torch.float64).to(dtype) for k, s in FPN_STRIDES.items()}
        boxes = rand_boxes(g, n, min_size=8.0, max_frac=0.9, dtype=dtype)
        image_idx = torch.randint(0, 2, (n,), generator=g)
        return call_spec(fp, feats, FPN_STRIDES, image_idx, boxes)

    def pool_diag(spec_builder):
        def diagnose(out, ref):
            if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
                return None
            spec = spec_builder()
            levels = reference(f)(spec["args"][3])
            order = torch.sort(levels, stable=True).indices
            if close(out, ref[order], atol=1e-4):
                return ("features are in level order, not in the order of the RoIs: row i of the output must be RoI i "
                        "(the course's bug that trained the classifier on wrong labels)")
            return "pooled values differ: roi_align(aligned=True, spatial_scale=1/stride, sampling_ratio=2) on the RoI's level"

        return diagnose

    def empty_pool() -> dict:
        feats = {k: torch.randn(1, 4, 224 // s, 224 // s, generator=gen(125)) for k, s in FPN_STRIDES.items()}
        return call_spec(fp, feats, FPN_STRIDES, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    return [
        call_check(A, f"{f}/random", f, "200 random boxes", random_boxes,
                   hint="k = round(4 + log2(sqrt(w * h) / 128)), halves up, clamped to [3, 5]"),
        call_check(A, f"{f}/boundaries", f, "sizes just under and over the level boundaries, degenerate boxes", boundaries),
        call_check(A, f"{f}/empty", f, "no boxes gives an empty int64 tensor", lambda: call_spec(f, torch.zeros(0, 4))),
        call_check(A, f"{fp}/random", fp, "40 random RoIs of two images, every level", lambda: pool_spec(122), atol=1e-4,
                   diagnose=pool_diag(lambda: pool_spec(122))),
        call_check(A, f"{fp}/empty", fp, "no RoIs gives (0, C, 7, 7)", empty_pool),
        call_check(A, f"{fp}/float64", fp, "float64 features", lambda: pool_spec(123, 10, torch.float64), atol=1e-8),
        mutation_check_of(f"{fp}/no_mutation", fp, lambda: pool_spec(124, 10),
                          ["feats_per_fpn_level", "strides_per_fpn_level", "image_idx", "boxes"]),
    ]


# ---------------------------------------------------------------------------
# FasterRCNN
# ---------------------------------------------------------------------------


def _frcnn_setup(seed: int, num_classes: int = 5, height: int = 224, width: int = 224, batch: int = 2, channels: int = 4):
    g = gen(seed)
    shapes = level_shapes(batch, channels, height, width)
    feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    # sizes from a few pixels to most of the image: RoIs of every FPN level
    proposals = [rand_boxes(g, n, width=width, height=height, min_size=6.0, max_frac=0.95) for n in (30, 18)]
    scores = [torch.rand(len(p), generator=g).sort(descending=True).values for p in proposals]
    weight = torch.randn(num_classes + 1, channels * 49, generator=g) * 0.2
    bias = torch.randn(num_classes + 1, generator=g) * 0.5
    backbone = {"__harness__": "fixed_features", "feats": feats, "strides": FPN_STRIDES, "out_channels": channels}
    rpn = {"__harness__": "fixed_rpn", "proposals": proposals, "scores": scores}
    classifier = {"__harness__": "fixed_classifier", "weight": weight, "bias": bias}
    images = torch.randn(batch, 3, height, width, generator=g)
    return images, backbone, rpn, classifier, g


def _frcnn_spec(backbone, rpn, calls, replace=None, batch_size_per_image=100000, num_classes=5, device="cpu"):
    return {"op": "module", "name": "FasterRCNN", "ctor_args": [backbone, rpn, [4]],
            "ctor_kwargs": {"num_classes": num_classes, "batch_size_per_image": batch_size_per_image},
            "seed": 0, "replace": replace or {}, "calls": calls, "device": device}


def _rows(image_idx, boxes, targets):
    table = torch.cat([image_idx.double()[:, None], boxes.double(), targets.double()[:, None]], 1)
    for col in reversed(range(table.shape[1])):
        table = table[torch.sort(table[:, col], stable=True).indices]
    return table


def _frcnn_checks() -> list[Check]:
    f = "FasterRCNN"

    def init_make():
        backbone = {"__harness__": "fixed_features", "feats": {}, "strides": FPN_STRIDES, "out_channels": 16}
        rpn = {"__harness__": "fixed_rpn", "proposals": [], "scores": []}
        spec = {"op": "module", "name": f, "ctor_args": [backbone, rpn, [16, 16]], "ctor_kwargs": {"num_classes": 5}, "seed": 0,
                "return": ["init_state_dict", "structure"]}

        def judge(values):
            value = values[0]
            state = {k: v for k, v in value["init_state_dict"].items() if k.startswith("cls_pred.")}
            if not state:
                return Verdict(False, "no parameters under cls_pred (keep the skeleton's attribute name)")
            structure = [r for r in value["structure"] if r["name"].startswith("cls_pred")]
            verdict = init_verdict(state, {}, 2, structure)
            if not verdict.passed:
                return verdict
            linear = [r for r in structure if r["type"] == "Linear"]
            if len(linear) != 1 or linear[0]["weight"][0] != 6:
                return Verdict(False, "cls_pred must end with one Linear layer with num_classes + 1 outputs (background = 0)")
            return Verdict(True)

        return Job([spec], judge)

    def sample_make():
        images, backbone, rpn, classifier, g = _frcnn_setup(131)
        gt = rand_gt(g, 2, [3, 2], 5, num_classes=5)
        proposals = [torch.cat([gt[0, :2, :4] + 1.0, rand_boxes(g, 20)]), rand_boxes(g, 12)]
        calls = [{"method": "sample_rois", "train": True, "args": [proposals, gt]}]
        spec = _frcnn_spec(backbone, rpn, calls)
        expected = run_reference(A, spec)["outputs"][0]

        def judge(values):
            out = values[0]["outputs"][0]
            if not isinstance(out, (list, tuple)) or len(out) != 3 or not all(isinstance(t, torch.Tensor) for t in out):
                return Verdict(False, "sample_rois must return (image_idx, boxes, targets) tensors")
            image_idx, boxes, targets = out
            if not (len(image_idx) == len(boxes) == len(targets)):
                return Verdict(False, "image_idx, boxes and targets must have one row per RoI")
            if targets.dtype != torch.int64 or image_idx.dtype != torch.int64:
                return Verdict(False, "image_idx and targets must be int64")
            if len(targets) != len(expected[2]):
                fewer = len(targets) < len(expected[2])
                return Verdict(False, f"{len(targets)} RoIs sampled, expected {len(expected[2])} (with a huge batch_size_per_image "
                                      "every non-neutral RoI is sampled" + ("; add the ground-truth boxes to the proposals" if fewer else "") + ")")
            got, want = _rows(image_idx, boxes, targets), _rows(*expected)
            if close(got, want, atol=1e-4):
                return Verdict(True)
            if close(got[:, :5], want[:, :5], atol=1e-4):
                shifted = _rows(image_idx, boxes, torch.where(targets >= 0, targets + 1, targets))
                if close(shifted, want, atol=1e-4):
                    return Verdict(False, "targets must be class + 1 for foreground RoIs (0 is background)")
                return Verdict(False, "targets differ: 0 for background (IoU < 0.5), class + 1 for foreground (IoU >= 0.5)")
            return Verdict(False, "the sampled RoIs differ: proposals of each image plus its ground-truth boxes (padding excluded), "
                                  "matched with thresholds (0.5, 0.5)")

        return Job([spec], judge)

    def losses_make():
        images, backbone, rpn, classifier, g = _frcnn_setup(132)
        gt = rand_gt(g, 2, [3, 2], 5, num_classes=5)
        calls = [{"method": "forward", "train": True, "args": [images, gt]}]
        spec = _frcnn_spec(backbone, rpn, calls, replace={"cls_pred": classifier})
        expected = run_reference(A, spec)["outputs"]
        return Job([spec], _scalar_losses_judge(expected, ("loss_cls",), RPN_HINTS))

    def inference_make():
        images, backbone, rpn, classifier, g = _frcnn_setup(133)
        calls = [{"method": "inference", "train": False, "no_grad": True, "args": [images], "kwargs": {"score_thresh": 0.2, "nms_thresh": 0.5}}]
        spec = _frcnn_spec(backbone, rpn, calls, replace={"cls_pred": classifier})
        expected = run_reference(A, spec)["outputs"][0]

        def judge(values):
            out = values[0]["outputs"][0]
            if not isinstance(out, (list, tuple)) or len(out) != len(expected):
                return Verdict(False, f"inference must return one (boxes, scores, classes) per image ({len(expected)} images)")
            for i, (o, e) in enumerate(zip(out, expected)):
                if not isinstance(o, (list, tuple)) or len(o) < 3 or not all(isinstance(t, torch.Tensor) for t in o[:3]):
                    return Verdict(False, "each image's detections must be tensors (boxes, scores, classes)")
                boxes, scores, classes = o[0], o[1], o[2]
                if len(scores) != len(e[1]):
                    return Verdict(False, f"image {i}: {len(scores)} detections, expected {len(e[1])} (softmax over C + 1, drop "
                                          "background and scores <= score_thresh, class-specific NMS per image)")
                oo = torch.sort(scores.double(), descending=True, stable=True).indices
                oe = torch.sort(e[1].double(), descending=True, stable=True).indices
                if not close(scores[oo], e[1][oe], atol=1e-5, rtol=1e-4):
                    return Verdict(False, f"image {i}: scores differ (the softmax probability of the predicted class)")
                if not close(boxes[oo], e[0][oe], atol=1e-3):
                    return Verdict(False, f"image {i}: boxes differ (a detection's box is its proposal)")
                if not torch.equal(classes[oo].long(), e[2][oe].long()):
                    return Verdict(False, f"image {i}: classes differ: object classes are 0..C-1 (the classifier's index minus 1)")
            return Verdict(True)

        return Job([spec], judge)

    return [
        Check(f"{f}/init", f, "classifier layers and initialisation", False, init_make),
        Check(f"{f}/sample_rois", f, "training RoIs: proposals plus ground truth, targets class + 1 or 0", False, sample_make),
        Check(f"{f}/losses_fixed_predictions", f, "classification loss with fixed features, proposals and classifier "
                                                  "(RoI features and targets in the same order)", False, losses_make),
        Check(f"{f}/inference_fixed_predictions", f, "inference with fixed proposals and classifier", False, inference_make),
    ]


@CHECK_SUITES.register("two_stage/hidden")
def hidden_checks() -> list[Check]:
    """Every hidden check of two_stage (registered: :func:`grader.suites.registry` lists them)."""
    return [*_flatten_checks(), *_rpn_head_checks(), *_anchor_checks(), *_iou_checks(), *_match_checks(),
            *_delta_checks(), *_sample_checks(), *_rpn_checks(), *_roi_checks(), *_frcnn_checks()]
