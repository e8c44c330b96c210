"""Hidden checks of the one-stage assignment (FCOS).

Inputs are seeded and built here; expected outputs come from the reference
(:func:`grader.checks.run_reference`).  Messages name the likely mistake
without printing the inputs or the expected values.
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
from grader.compare import Verdict, close, compare_tree
from grader.functions import reference
from grader.judges import diagnose_nms, greedy_nms, judge_indices, shape_tree, shape_verdict
from grader.registry import CHECK_SUITES

A = "one_stage"
LOC_HINT = "expected stride * (col + 0.5), stride * (row + 0.5) per cell, row-major with x fastest"
MATCH_HINT = ("a location matches a box when strictly inside it and max(l, t, r, b) is in the level's range "
              "(p3 [0, 64), p4 [64, 128), p5 [128, inf)); the smallest box wins; padding rows never match; "
              "unmatched locations get a row of -1")


def _locations(shapes: dict, dtype=torch.float32) -> dict:
    return reference("get_fpn_location_coords")(shapes, {k: FPN_STRIDES[k] for k in shapes}, dtype=dtype)


# ---------------------------------------------------------------------------
# get_fpn_location_coords
# ---------------------------------------------------------------------------


def _diagnose_locations(shapes: dict, strides: dict):
    def diagnose(out, ref):
        if not isinstance(out, dict):
            return None
        for level, r in ref.items():
            o = out.get(level)
            if not isinstance(o, torch.Tensor) or o.shape != r.shape or close(o, r):
                continue
            h, w = int(shapes[level][-2]), int(shapes[level][-1])
            transposed = r.view(h, w, 2).transpose(0, 1).reshape(-1, 2)
            if close(o, transposed):
                return f"output[{level!r}]: your locations look transposed: x must vary fastest (row-major order)"
            if close(o.flip(-1), r):
                return f"output[{level!r}]: x and y look swapped: each row must be (xc, yc)"
            if close(o, r - strides[level] / 2) or close(o, r + strides[level] / 2):
                return f"output[{level!r}]: off by half a stride: the centre of cell (row, col) is stride * (col + 0.5), stride * (row + 0.5)"
            if close(o, r / strides[level] - 0.5) or close(o, r / strides[level]):
                return f"output[{level!r}]: not scaled by the stride: locations are in input-image pixels"
        return None

    return diagnose


def _location_checks() -> list[Check]:
    f = "get_fpn_location_coords"
    shapes = {"p3": (2, 8, 5, 7), "p4": (2, 8, 3, 4), "p5": (2, 8, 2, 2)}
    single = {"p4": (1, 1, 3, 5)}
    return [
        call_check(A, f"{f}/non_square", f, "non-square feature maps, three levels",
                   lambda: call_spec(f, shapes, FPN_STRIDES), diagnose=_diagnose_locations(shapes, FPN_STRIDES), hint=LOC_HINT),
        call_check(A, f"{f}/float64", f, "dtype argument float64 is honoured",
                   lambda: call_spec(f, shapes, FPN_STRIDES, dtype=torch.float64), diagnose=_diagnose_locations(shapes, FPN_STRIDES)),
        call_check(A, f"{f}/one_level_other_stride", f, "a single level with another stride",
                   lambda: call_spec(f, single, {"p4": 12}), diagnose=_diagnose_locations(single, {"p4": 12}), hint=LOC_HINT),
        call_check(A, f"{f}/cuda", f, "device argument cuda is honoured",
                   lambda: call_spec(f, shapes, FPN_STRIDES, device="cuda"), cuda=True),
    ]


# ---------------------------------------------------------------------------
# DetectorBackboneWithFPN
# ---------------------------------------------------------------------------


def _fpn_check() -> Check:
    def make():
        torch.manual_seed(0)
        ref = reference("DetectorBackboneWithFPN")(16, weights=None).eval()
        images = torch.randn(1, 3, 96, 128, generator=gen(3))
        with torch.no_grad():
            expected = {k: v.clone() for k, v in ref(images).items()}
        spec = {"op": "fpn_permutations", "out_channels": 16, "state_dict": dict(ref.state_dict()), "images": images, "seed": 0}

        def judge(values):
            value = values[0]
            if value.get("trunk_missing"):
                return Verdict(False, "the RegNet trunk (stem, block1 ... block4) must stay as given: "
                                      f"missing {value['trunk_missing'][:3]}")
            outputs = value.get("outputs") or []
            if not outputs:
                found = ", ".join(f"{r['name']} {r['weight']}" for r in value.get("structure", [])) or "nothing"
                return Verdict(False, "fpn_params must hold one 1x1 lateral conv per level (c3/c4/c5 channels -> out_channels) "
                                      f"and one 3x3 output conv per level (padding 1); found: {found}")
            shape_verdict = compare_tree(outputs[0], {k: v for k, v in expected.items()}, what="FPN output", atol=1e9, rtol=1e9)
            if not shape_verdict.passed:
                return shape_verdict
            for out in outputs:
                if compare_tree(out, expected, atol=1e-4, rtol=1e-3).passed:
                    return Verdict(True)
            return Verdict(False, "FPN values differ from the expected ones: p5 = output conv of lateral(c5); "
                                  "p4 = output conv of (lateral(c4) + nearest-upsampled merged p5 map); likewise p3 "
                                  "(add before the 3x3 output conv, upsample with mode='nearest')")

        return Job([spec], judge)

    return Check("DetectorBackboneWithFPN/fpn_computation", "DetectorBackboneWithFPN",
                 "FPN top-down computation with given weights (non-square image)", False, make)


def _backbone_shapes(check_id: str, title: str, out_channels: int, image: tuple, cuda: bool = False) -> Check:
    def make():
        spec = {"op": "module", "name": "DetectorBackboneWithFPN", "ctor_args": [out_channels], "ctor_kwargs": {"weights": None},
                "seed": 0, "device": "cuda" if cuda else "cpu",
                "calls": [{"method": "forward", "args": [{"__randn__": list(image), "seed": 1}], "no_grad": True}]}
        expected = shape_tree(run_reference(A, {**spec, "device": "cpu"})["outputs"])

        def judge(values):
            from grader.compare import devices_ok
            verdict = shape_verdict(values[0]["outputs"], expected, "output")
            if verdict.passed and cuda:
                return devices_ok(values[0]["devices"], "cuda")
            return verdict

        return Job([spec], judge)

    return Check(check_id, "DetectorBackboneWithFPN", title, False, make, cuda=cuda)


# ---------------------------------------------------------------------------
# FCOSPredictionNetwork
# ---------------------------------------------------------------------------


def load_error_message(error: str, layout: str) -> str:
    """A failed ``load_state_dict`` as one line naming the differing layers (the first line
    of PyTorch's message only names the class)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    details = []
    for line in lines:
        if line.startswith("size mismatch for "):
            name = line[len("size mismatch for "):].split(":")[0]
            shapes = [part.split(")")[0] for part in line.split("torch.Size(")[1:]]
            if len(shapes) == 2:
                details.append(f"{name} has shape {shapes[1]}, expected {shapes[0]}")
            else:
                details.append(line[:120])
        elif line.startswith(("Missing key(s)", "Unexpected key(s)")):
            details.append(line[:200])
    text = "; ".join(details[:4]) or (lines[0][:300] if lines else error[:300])
    return f"your layers differ from the expected layout ({layout}): {text}"


def _flatten_diag(feat_shapes: dict, names=("class logits", "box deltas", "centerness logits"), alt_ctr=None):
    def diagnose(out, ref):
        if not isinstance(out, (list, tuple)) or len(out) != 3:
            return None
        for i, (o_dict, r_dict) in enumerate(zip(out, ref)):
            for level, r in r_dict.items():
                o = o_dict.get(level) if isinstance(o_dict, dict) else None
                if not isinstance(o, torch.Tensor) or close(o, r):
                    continue
                b, _, h, w = feat_shapes[level]
                if o.shape == r.shape and close(o, r.view(b, h, w, -1).transpose(1, 2).reshape(r.shape)):
                    return (f"{names[i]}[{level!r}]: flattened in the wrong order: "
                            "permute (B, C, H, W) -> (B, H, W, C) before reshaping to (B, H*W, C)")
                if o.numel() == r.numel() and close(o.reshape(-1), r.view(b, h * w, -1).permute(0, 2, 1).reshape(-1)):
                    return f"{names[i]}[{level!r}]: reshaped without permuting channels last: permute (B, C, H, W) -> (B, H, W, C) first"
                if i == 2 and alt_ctr is not None and close(o, alt_ctr[level]):
                    return "centerness logits must be computed from the box stem (this course's layout), not the class stem"
                if i == 1 and o.shape == r.shape:
                    return None
        return None

    return diagnose


def _head_checks() -> list[Check]:
    f = "FCOSPredictionNetwork"

    def init_make():
        spec = {"op": "module", "name": f, "ctor_args": [5, 32, [32, 32]], "seed": 0, "return": ["init_state_dict", "structure"]}
        return Job([spec], lambda v: init_verdict(v[0]["init_state_dict"], {"pred_cls.bias": -math.log(99)}, 7, v[0]["structure"]))

    def forward_make():
        torch.manual_seed(0)
        ref = reference(f)(5, 16, [16, 16])
        with torch.no_grad():
            for p in ref.parameters():  # informative weights: N(0, 0.01) makes every output ~0
                p.normal_(0, 0.3)
        g = gen(5)
        shapes = {"p3": (3, 16, 6, 5), "p4": (3, 16, 3, 3), "p5": (3, 16, 2, 2)}
        feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
        spec = {"op": "module", "name": f, "ctor_args": [5, 16, [16, 16]], "seed": 0, "state_dict": dict(ref.state_dict()),
                "calls": [{"method": "forward", "args": [feats], "no_grad": True}]}
        with torch.no_grad():
            expected = ref(feats)
            alt_ctr = {k: ref.pred_ctr(ref.stem_cls(v)).permute(0, 2, 3, 1).flatten(1, 2) for k, v in feats.items()}
        diagnose = _flatten_diag(shapes, alt_ctr=alt_ctr)

        def judge(values):
            value = values[0]
            if value.get("load_error"):
                return Verdict(False, load_error_message(
                    value["load_error"], "stem_cls / stem_box: 3x3 Conv2d (padding 1) + ReLU per stem layer; pred_cls, pred_box, "
                                         "pred_ctr: 3x3 convs, pred_cls on the class stem, pred_box and pred_ctr on the box stem"))
            out = value["outputs"][0]
            verdict = compare_tree(out, tuple(expected), atol=1e-5, rtol=1e-4)
            if not verdict.passed:
                message = diagnose(out, expected)
                return Verdict(False, message or verdict.message)
            return verdict

        return Job([spec], judge)

    def configs_make():
        g = gen(6)
        specs, expected = [], []
        for ctor, batch, channels in (([3, 8, []], 1, 8), ([4, 8, [8, 8, 8]], 2, 8)):
            feats = {"p3": torch.randn(batch, channels, 4, 6, generator=g), "p4": torch.randn(batch, channels, 2, 3, generator=g)}
            spec = {"op": "module", "name": f, "ctor_args": ctor, "seed": 0,
                    "calls": [{"method": "forward", "args": [feats], "no_grad": True}]}
            specs.append(spec)
            expected.append(shape_tree(run_reference(A, spec)["outputs"]))

        def judge(values):
            for value, exp in zip(values, expected):
                verdict = shape_verdict(value["outputs"], exp, "output")
                if not verdict.passed:
                    return Verdict(False, verdict.message + " (with an empty stem or three stem layers, on two levels)")
            return Verdict(True)

        return Job(specs, judge)

    return [
        Check(f"{f}/init", f, "initialisation: N(0, 0.01) weights, zero biases, pred_cls bias -log(99), 3x3 convs", False, init_make),
        Check(f"{f}/forward_same_weights", f, "outputs with given weights (order of the flattened locations, centerness branch)",
              False, forward_make),
        Check(f"{f}/other_configs", f, "empty and three-layer stems, other levels and batch sizes", False, configs_make),
    ]


# ---------------------------------------------------------------------------
# fcos_match_locations_to_gt
# ---------------------------------------------------------------------------


def _course_variant_match(locations: dict, strides: dict, gt_boxes: torch.Tensor, *, exclusive_lower: bool = False,
                          float32_cost: bool = False) -> dict:
    """What two course-style variants of the matching return (for diagnoses only).

    ``exclusive_lower``: ``m > lower`` instead of ``m >= lower``.  ``float32_cost``: the
    course's ``(1e8 - area)`` score in float32, maximised (near-equal areas round to the
    same score and the first box wins, even if it is the larger).  Otherwise the rule
    of :func:`solutions.fcos_targets.fcos_match_locations_to_gt`.
    """
    batched = gt_boxes.dim() == 3
    gt = (gt_boxes if batched else gt_boxes[None]).double()
    levels = list(locations)
    values = sorted(float(strides[k]) for k in levels)
    out = {}
    for level in levels:
        s = float(strides[level])
        lower = 0.0 if s == values[0] else 4 * s
        upper = math.inf if s == values[-1] else 8 * s
        loc = locations[level].double()
        xc, yc = loc[None, :, 0, None], loc[None, :, 1, None]
        x1, y1, x2, y2 = (gt[:, None, :, k] for k in range(4))
        dist = torch.stack([xc - x1, yc - y1, x2 - xc, y2 - yc], -1)
        far = dist.amax(-1)
        low_ok = far > lower if exclusive_lower else far >= lower
        ok = (dist.amin(-1) > 0) & low_ok & (far < upper) & (gt[:, None, :, 4] >= 0)
        area = (x2 - x1) * (y2 - y1)
        if float32_cost:
            score = torch.where(ok, (1e8 - area.float()).double(), torch.zeros_like(far))
            best, idx = score.max(-1)
            none = best <= 0
        else:
            cost = torch.where(ok, area.expand_as(far), torch.full_like(far, math.inf))
            best, idx = cost.min(-1)
            none = torch.isinf(best)
        rows = torch.gather(gt, 1, idx[..., None].expand(-1, -1, 5))
        rows = torch.where(none[..., None], torch.full_like(rows, -1.0), rows).to(gt_boxes.dtype)
        out[level] = rows if batched else rows[0]
    return out


def _course_match_diag(locations: dict, gt_boxes: torch.Tensor, fallback):
    """A diagnosis that first recognises the course's two matching habits, then ``fallback``."""
    def diagnose(out, ref):
        if isinstance(out, dict) and all(isinstance(out.get(k), torch.Tensor) and out[k].shape == r.shape for k, r in ref.items()):
            def same(**kw) -> bool:
                variant = _course_variant_match(locations, FPN_STRIDES, gt_boxes, **kw)
                return all(close(out[k], variant[k]) for k in ref)

            boundary = ("a location whose max(l, t, r, b) equals a level's lower bound (e.g. exactly 64 px on p4) must match "
                        "on that level: the ranges are lower <= max(l, t, r, b) < upper (>= at the lower bound; the course used >)")
            areas = ("of two boxes whose areas differ by a few px² the larger won: the smallest area must win; compare the "
                     "areas themselves (the course's 1e8 - area in float32 rounds near-equal areas to the same value)")
            # One habit at a time first: on most inputs only one of them changes anything.
            if same(exclusive_lower=True):
                return boundary
            if same(float32_cost=True):
                return f"near-equal areas: {areas}"
            if same(exclusive_lower=True, float32_cost=True):
                return f"two course habits: {boundary}; and {areas}"
        return fallback(out, ref)

    return diagnose


def _match_diag(out, ref):
    if isinstance(ref, dict) and isinstance(out, dict):
        for level, r in ref.items():
            o = out.get(level)
            if not isinstance(o, torch.Tensor) or o.shape != r.shape:
                continue
            ref_bg = (r[..., 4] < 0)
            out_bg = (o[..., 4] < 0) if o.is_floating_point() else None
            if out_bg is None:
                continue
            if bool((ref_bg & ~out_bg).any()) and bool(((o[..., :4] == -1).all(-1) & (o[..., 4] != -1)).any()):
                return "padding rows (class -1) must never be matched"
            if bool((ref_bg & ~out_bg).any()) and not bool((~ref_bg & out_bg).any()):
                return f"{level}: some locations are matched that should be background ({MATCH_HINT})"
            if bool((~ref_bg & out_bg).any()) and not bool((ref_bg & ~out_bg).any()):
                return f"{level}: some locations that should be matched are background ({MATCH_HINT})"
            if bool(((o[..., :4] != -1).any(-1) & (o[..., 4] == -1)).any()):
                return "background rows must be all -1 (all five columns)"
    return None


def _ties_diag(out, ref):
    if not isinstance(out, dict):
        return None
    for level, r in ref.items():
        o = out.get(level)
        if not isinstance(o, torch.Tensor) or o.shape != r.shape:
            continue
        rc, oc = r[..., 4], o[..., 4]
        if bool(((rc == 2) & (oc == 1)).any()):
            return "when several boxes contain a location (in range), the smallest box (by area) must win"
        if bool(((rc == 5) & (oc == 6)).any()):
            return "when two candidate boxes have the same area, the one listed first in gt_boxes must win"
    return _match_diag(out, ref)


def _match_checks() -> list[Check]:
    f = "fcos_match_locations_to_gt"
    shapes224 = level_shapes(2, 8, 224, 224)

    def batched():
        g = gen(11)
        gt = rand_gt(g, 2, [6, 3], 8)
        gt[0, 0] = torch.tensor([5.0, 5, 215, 220, 3])
        gt[1, 1] = torch.tensor([20.0, 40, 200, 170, 9])
        return call_spec(f, _locations(shapes224), FPN_STRIDES, gt)

    def unbatched():
        g = gen(12)
        gt = rand_gt(g, 1, [5], 7)[0]
        gt[1] = torch.tensor([0.0, 0, 224, 224, 1])
        return call_spec(f, _locations(shapes224), FPN_STRIDES, gt)

    def all_padding():
        return call_spec(f, _locations(shapes224), FPN_STRIDES, torch.full((2, 4, 5), -1.0))

    def empty():
        return call_spec(f, _locations(shapes224), FPN_STRIDES, torch.zeros(2, 0, 5))

    def boundaries():
        # -24..60: the p4 location (40, 40) is exactly 64 px from the left side (p4's lower bound);
        # -28..56: the p3 location (36, 36) is exactly 64 px from it (p3's excluded upper bound);
        # x1 = 44 passes through a column of p3 locations (on the border: not inside).
        gt = torch.tensor([[-24.0, 30, 60, 70, 4], [-28, 26, 56, 66, 5], [44, 100, 100, 150, 7], [0, 0, 224, 224, 2],
                           [96, 96, 224, 224, 8], [-1, -1, -1, -1, -1]])
        return call_spec(f, _locations(shapes224), FPN_STRIDES, gt)

    def ties():
        gt = torch.tensor([[[20.0, 20, 120, 120, 1], [40, 40, 110, 110, 2], [150, 150, 200, 200, 5], [150, 150, 200, 200, 6]]])
        return call_spec(f, _locations(shapes224), FPN_STRIDES, gt)

    def near_equal_areas():
        # The larger box first: areas 10003 and 10000 px² (float32 spacing at 1e8 is 8), and a
        # pair on p4 whose areas differ by 2 px²; distinct classes show which box won.
        # Half-pixel corners keep every distance off the level boundaries (a check of one thing).
        gt = torch.tensor([[[20.5, 20.5, 120.53, 120.5, 3], [20.5, 20.5, 120.5, 120.5, 7], [100.5, 100.5, 200.5, 200.52, 4],
                            [100.5, 100.5, 200.5, 200.5, 9], [-1, -1, -1, -1, -1]]])
        return call_spec(f, _locations(shapes224), FPN_STRIDES, gt)

    def diag(build, fallback=_match_diag):
        spec = build()
        return _course_match_diag(spec["args"][0], spec["args"][2], fallback)

    def float64():
        g = gen(13)
        return call_spec(f, _locations(shapes224, torch.float64), FPN_STRIDES, rand_gt(g, 2, [4, 5], 6, dtype=torch.float64))

    def non_square():
        g = gen(14)
        shapes = level_shapes(1, 8, 96, 160)
        return call_spec(f, _locations(shapes), FPN_STRIDES, rand_gt(g, 3, [3, 0, 5], 5, width=160, height=96))

    def cuda():
        g = gen(15)
        return call_spec(f, _locations(shapes224), FPN_STRIDES, rand_gt(g, 2, [5, 2], 6))

    return [
        call_check(A, f"{f}/random_batched", f, "random boxes, batched (B, N, 5) with padding", batched, diagnose=diag(batched), hint=MATCH_HINT),
        call_check(A, f"{f}/unbatched", f, "one image's (N, 5) boxes give (L, 5) per level", unbatched, diagnose=_match_diag, hint=MATCH_HINT),
        call_check(A, f"{f}/all_padding", f, "ground truth made only of padding rows", all_padding, diagnose=_match_diag),
        call_check(A, f"{f}/empty_gt", f, "ground truth with zero rows", empty, diagnose=_match_diag),
        call_check(A, f"{f}/boundaries", f, "locations on a box border; max distance exactly on a level boundary", boundaries,
                   diagnose=diag(boundaries), hint="on the border is not inside (l, t, r, b must be > 0); ranges are [lower, upper)"),
        call_check(A, f"{f}/ties", f, "several boxes contain a location: smallest area wins, equal areas the first", ties,
                   diagnose=diag(ties, _ties_diag)),
        call_check(A, f"{f}/near_equal_areas", f, "two boxes with areas a few px² apart, the larger listed first: the smaller wins",
                   near_equal_areas, diagnose=diag(near_equal_areas, _ties_diag)),
        call_check(A, f"{f}/float64", f, "float64 inputs give float64 outputs", float64, diagnose=_match_diag, hint=MATCH_HINT),
        call_check(A, f"{f}/non_square", f, "non-square image, batch of three with an empty image", non_square,
                   diagnose=_match_diag, hint=MATCH_HINT),
        call_check(A, f"{f}/cuda", f, "CUDA inputs", cuda, cuda=True),
        mutation_check_of(f"{f}/no_mutation", f, batched, ["locations_per_fpn_level", "strides_per_fpn_level", "gt_boxes"]),
    ]


# ---------------------------------------------------------------------------
# FCOS deltas and centerness
# ---------------------------------------------------------------------------


def _inside_locations(g, boxes: torch.Tensor) -> torch.Tensor:
    t = torch.rand(len(boxes), 2, generator=g, dtype=torch.float64).to(boxes.dtype) * 0.8 + 0.1
    return boxes[:, :2] + t * (boxes[:, 2:4] - boxes[:, :2])


def _deltas_diag(stride):
    def diagnose(out, ref):
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            return None
        fg = ~(ref == -1).all(-1)
        o, r = out[fg], ref[fg]
        if close_to(o, r[..., [1, 0, 3, 2]]):
            return "x and y look swapped: deltas are (xc - x1, yc - y1, x2 - xc, y2 - yc) / stride"
        if close_to(o, r[..., [0, 2, 1, 3]]):
            return "wrong order: deltas are (left, top, right, bottom) = (xc - x1, yc - y1, x2 - xc, y2 - yc) / stride"
        if isinstance(stride, (int, float)) and close_to(o, r * stride):
            return "deltas must be divided by the stride"
        if close_to(o, r) and not close_to(out[~fg], ref[~fg]):
            return "background rows (a box of -1) must give deltas (-1, -1, -1, -1)"
        return None

    return diagnose


def _apply_diag(stride):
    def diagnose(out, ref):
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            return None
        if close_to(out, ref[..., [1, 0, 3, 2]]):
            return "x and y look swapped: boxes are (xc - l*s, yc - t*s, xc + r*s, yc + b*s)"
        return None

    return diagnose


def _delta_checks() -> list[Check]:
    f, fa, fc = "fcos_get_deltas_from_locations", "fcos_apply_deltas_to_locations", "fcos_make_centerness_targets"

    def random_pairs(seed, n=40, dtype=torch.float32, cols=4):
        g = gen(seed)
        boxes = rand_boxes(g, n, dtype=dtype)
        locations = _inside_locations(g, boxes)
        if cols == 5:
            boxes = torch.cat([boxes, torch.randint(0, 20, (n, 1), generator=g).to(dtype)], dim=1)
        return locations, boxes

    def with_background(seed=22):
        locations, boxes = random_pairs(seed, cols=5)
        boxes[::3] = -1.0
        return locations, boxes

    def batched():
        g = gen(23)
        locations = torch.rand(30, 2, generator=g) * 224
        boxes = torch.full((2, 30, 5), -1.0)
        for b in range(2):
            chosen = rand_boxes(g, 30)
            inside = ((chosen[:, 0] < locations[:, 0]) & (chosen[:, 2] > locations[:, 0])
                      & (chosen[:, 1] < locations[:, 1]) & (chosen[:, 3] > locations[:, 1]))
            boxes[b, inside, :4] = chosen[inside]
            boxes[b, inside, 4] = 1.0
        return call_spec(f, locations, boxes, 16)

    def deltas_of(seed, negative=False, dtype=torch.float32):
        g = gen(seed)
        deltas = (torch.rand(50, 4, generator=g, dtype=torch.float64) * 8).to(dtype)
        if negative:
            deltas[::2, ::3] *= -1
        locations = (torch.rand(50, 2, generator=g, dtype=torch.float64) * 224).to(dtype)
        return deltas, locations

    def centerness_input(seed, background=False, batched=False, dtype=torch.float32):
        g = gen(seed)
        deltas = (torch.rand(2 if batched else 1, 60, 4, generator=g, dtype=torch.float64) * 10 + 0.05).to(dtype)
        if background:
            deltas[:, ::4] = -1.0
        return deltas if batched else deltas[0]

    def background_rows():
        deltas, locations = deltas_of(36)
        deltas[::3] = -1.0  # 17 background rows, each at its own location
        return call_spec(fa, deltas, locations, 8)

    def background_diag(out, ref):
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            return None
        background = (ref[:, :2] == ref[:, 2:]).all(-1)
        if close(out[~background], ref[~background], atol=1e-4) and not close(out[background], ref[background], atol=1e-4):
            if close(out[background], ref[background][:1].expand(int(background.sum()), 4), atol=1e-4):
                return ("every background row got the first background location's box: each background row (deltas -1) "
                        "gives the empty box (xc, yc, xc, yc) of its own location")
            return "background rows (deltas -1) must give the empty box (xc, yc, xc, yc) of their own location (deltas clamped to 0)"
        return _apply_diag(8)(out, ref)

    def stride_tensor() -> dict:
        deltas, locations = deltas_of(27)
        strides = torch.tensor([8.0, 16.0, 32.0]).repeat_interleave(torch.tensor([20, 20, 10]))[:, None]
        return call_spec(fa, deltas, locations, strides)
    return [
        call_check(A, f"{f}/random", f, "random locations inside random boxes (4 columns), stride 16",
                   lambda: call_spec(f, *random_pairs(21), 16), diagnose=_deltas_diag(16)),
        call_check(A, f"{f}/background_rows", f, "5-column boxes with background rows", lambda: call_spec(f, *with_background(), 8),
                   diagnose=_deltas_diag(8)),
        call_check(A, f"{f}/broadcast_batch", f, "locations (L, 2) with boxes (B, L, 5) broadcast to (B, L, 4)", batched,
                   diagnose=_deltas_diag(16)),
        call_check(A, f"{f}/float64", f, "float64 inputs", lambda: call_spec(f, *random_pairs(24, dtype=torch.float64), 32),
                   diagnose=_deltas_diag(32)),
        mutation_check_of(f"{f}/no_mutation", f, lambda: call_spec(f, *with_background(25), 8), ["locations", "gt_boxes", "stride"]),
        call_check(A, f"{fa}/random", fa, "random positive deltas, stride 8", lambda: call_spec(fa, *deltas_of(26), 8),
                   diagnose=_apply_diag(8), hint="boxes are (xc - l*s, yc - t*s, xc + r*s, yc + b*s)"),
        call_check(A, f"{fa}/negative_clamped", fa, "negative deltas are clamped to 0", lambda: call_spec(fa, *deltas_of(28, negative=True), 16),
                   diagnose=_apply_diag(16), hint="clamp negative deltas to 0 before using them"),
        call_check(A, f"{fa}/background_rows", fa, "several background rows (deltas -1) at different locations",
                   background_rows, diagnose=background_diag),
        call_check(A, f"{fa}/stride_tensor", fa, "a per-location stride tensor (L, 1)", stride_tensor, diagnose=_apply_diag(None)),
        call_check(A, f"{fa}/float64", fa, "float64 inputs", lambda: call_spec(fa, *deltas_of(29, dtype=torch.float64), 8)),
        mutation_check_of(f"{fa}/no_mutation", fa, lambda: call_spec(fa, *deltas_of(30, negative=True), 8), ["deltas", "locations", "stride"],
                          title="negative deltas are clamped on a copy (the caller's tensor is unchanged)"),
        call_check(A, f"{fc}/random", fc, "random deltas", lambda: call_spec(fc, centerness_input(31)),
                   hint="centerness = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))"),
        call_check(A, f"{fc}/background", fc, "background rows give -1", lambda: call_spec(fc, centerness_input(32, background=True)),
                   diagnose=lambda out, ref: ("centerness must be -1 for background rows (deltas of -1)"
                                              if isinstance(out, torch.Tensor) and out.shape == ref.shape
                                              and not close(out[ref == -1], ref[ref == -1])
                                              else None)),
        call_check(A, f"{fc}/batched", fc, "batched deltas (B, L, 4) give (B, L)", lambda: call_spec(fc, centerness_input(33, True, True))),
        call_check(A, f"{fc}/float64", fc, "float64 inputs", lambda: call_spec(fc, centerness_input(34, True, dtype=torch.float64))),
        mutation_check_of(f"{fc}/no_mutation", fc, lambda: call_spec(fc, centerness_input(35, True)), ["deltas"]),
    ]


# ---------------------------------------------------------------------------
# NMS
# ---------------------------------------------------------------------------


def _index_check(check_id: str, function: str, title: str, build, *, cuda: bool = False, judge_fn=None) -> Check:
    def make():
        spec = build()
        if cuda:
            spec["device"] = "cuda"
        expected = run_reference(A, spec)["output"]

        def judge(values):
            from grader.compare import devices_ok

            out = values[0]["output"]
            verdict = judge_fn(out, expected, spec) if judge_fn else judge_indices(out, expected)
            if verdict.passed and cuda:
                return devices_ok(values[0]["devices"], "cuda")
            return verdict

        return Job([spec], judge)

    return Check(check_id, function, title, False, make, cuda=cuda)


def _ties_judge(out, expected, spec):
    verdict = judge_indices(out, expected)
    if verdict.passed:
        return verdict
    if not isinstance(out, torch.Tensor):
        return verdict
    group = set(range(3))  # the three identical boxes with equal scores
    kept = set(out.reshape(-1).tolist())
    if len(kept & group) > 1:
        return Verdict(False, "kept several identical boxes with equal scores (NMS keeping ties): suppress a box when its "
                              "IoU with a kept box is > threshold, whatever the scores")
    if (kept - group) == (set(expected.tolist()) - group) and len(kept & group) == 1:
        return Verdict(True)  # another one of the identical boxes kept: fine
    return verdict


def _nms_judge(out, expected, spec):
    """Kept indices; when they differ, recognise a wrong intersection."""
    verdict = judge_indices(out, expected)
    if verdict.passed or not isinstance(out, torch.Tensor):
        return verdict
    message = diagnose_nms(out, *spec["args"][:3])
    return Verdict(False, message) if message else verdict


def _zero_area_judge(out, expected, spec):
    verdict = judge_indices(out, expected)
    if verdict.passed or not isinstance(out, torch.Tensor):
        return verdict
    if len(out) < len(expected) and out.reshape(-1).tolist() == greedy_nms(*spec["args"][:3], keep_le=True):
        return Verdict(False, "two zero-area boxes have IoU 0 / 0 = NaN, and your NMS suppresses them: keeping only boxes with "
                              "IoU <= threshold drops NaN; suppress a box only when IoU > threshold (torchvision.ops.nms keeps both)")
    return verdict


def _threshold_judge(out, expected, spec):
    verdict = judge_indices(out, expected)
    if not verdict.passed and isinstance(out, torch.Tensor) and len(out) < len(expected):
        return Verdict(False, "a box whose IoU equals the threshold must be kept: suppress only when IoU > threshold")
    return verdict


def _empty_judge(out, expected, spec):
    if not isinstance(out, torch.Tensor):
        return Verdict(False, f"empty input must give an empty int64 tensor, got {type(out).__name__}")
    if out.numel() != 0 or out.dtype != torch.int64:
        return Verdict(False, f"empty input must give an empty int64 tensor, got shape {tuple(out.shape)} dtype {out.dtype}")
    return Verdict(True)


def _nms_checks() -> list[Check]:
    f, fc = "nms", "class_spec_nms"

    def random_float(seed=41, n=800, dtype=torch.float32, thr=0.5):
        g = gen(seed)
        return call_spec(f, rand_boxes(g, n, max_frac=0.3, dtype=dtype), torch.rand(n, generator=g, dtype=torch.float64).to(dtype), thr)

    def ties():
        g = gen(42)
        boxes = torch.cat([torch.tensor([[10.0, 10, 60, 60]] * 3), rand_boxes(g, 20, max_frac=0.3)])
        scores = torch.cat([torch.full((3,), 0.7), torch.rand(20, generator=g)])
        return call_spec(f, boxes, scores, 0.5)

    def at_threshold():
        boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1], [10, 10, 12, 11], [10, 10, 11.1, 11]])
        return call_spec(f, boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.5)

    def classes(seed=45, n=400, dtype=torch.float32):
        g = gen(seed)
        boxes = rand_boxes(g, n, max_frac=0.35, dtype=dtype)
        return call_spec(fc, boxes, torch.rand(n, generator=g).to(dtype), torch.randint(0, 6, (n,), generator=g), 0.5)

    def zero_area():
        # Two identical points (IoU 0 / 0 with each other), a line, and boxes around them.
        boxes = torch.tensor([[50.0, 50, 50, 50], [50, 50, 50, 50], [30, 30, 30, 80], [30, 30, 30, 80], [40, 40, 70, 70],
                              [41, 41, 70, 70], [100, 100, 120, 130]])
        return call_spec(f, boxes, torch.tensor([0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6]), 0.5)

    def cross_class():
        boxes = torch.tensor([[10.0, 10, 60, 60]] * 4 + [[12.0, 12, 60, 60]])
        return call_spec(fc, boxes, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([0, 1, 2, 3, 0]), 0.5)

    return [
        _index_check(f"{f}/random_float", f, "800 random float boxes, threshold 0.5", random_float, judge_fn=_nms_judge),
        _index_check(f"{f}/threshold_0.3", f, "random boxes, threshold 0.3", lambda: random_float(43, 500, thr=0.3),
                     judge_fn=_nms_judge),
        _index_check(f"{f}/zero_area", f, "zero-area boxes (IoU 0 / 0 with each other) suppress nothing and are kept",
                     zero_area, judge_fn=_zero_area_judge),
        _index_check(f"{f}/ties", f, "identical boxes with equal scores: one is kept", ties, judge_fn=_ties_judge),
        _index_check(f"{f}/iou_equals_threshold", f, "IoU exactly equal to the threshold does not suppress", at_threshold,
                     judge_fn=_threshold_judge),
        _index_check(f"{f}/empty", f, "no boxes: an empty int64 tensor", lambda: call_spec(f, torch.zeros(0, 4), torch.zeros(0), 0.5),
                     judge_fn=_empty_judge),
        _index_check(f"{f}/float64", f, "float64 boxes and scores", lambda: random_float(44, 300, dtype=torch.float64)),
        _index_check(f"{f}/cuda", f, "CUDA boxes", lambda: random_float(46, 300), cuda=True),
        mutation_check_of(f"{f}/no_mutation", f, lambda: random_float(47, 200), ["boxes", "scores", "iou_threshold"]),
        _index_check(f"{fc}/random", fc, "400 random boxes of 6 classes", classes),
        _index_check(f"{fc}/cross_class", fc, "identical boxes of different classes are all kept", cross_class,
                     judge_fn=lambda out, exp, spec: (Verdict(False, "boxes of different classes must never suppress each other")
                                                      if isinstance(out, torch.Tensor) and len(out) < len(exp) else judge_indices(out, exp))),
        _index_check(f"{fc}/empty", fc, "no boxes: an empty int64 tensor",
                     lambda: call_spec(fc, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5), judge_fn=_empty_judge),
        _index_check(f"{fc}/float64", fc, "float64 boxes", lambda: classes(48, 200, torch.float64)),
        mutation_check_of(f"{fc}/no_mutation", fc, lambda: classes(49, 100), ["boxes", "scores", "class_ids", "iou_threshold"]),
    ]


# ---------------------------------------------------------------------------
# FCOS (losses and inference with fixed backbone features and head outputs)
# ---------------------------------------------------------------------------

LOSS_HINTS = {
    "loss_cls": "sigmoid focal loss on one-hot targets (all-zero rows for background), summed, divided by normalizer * B",
    "loss_box": "0.25 * L1 between predicted and target deltas, zero at background locations, summed, divided by normalizer * B",
    "loss_ctr": "BCE-with-logits against the centerness targets, zero at background locations, summed, divided by normalizer * B",
}


def _fixed_fcos_setup(seed: int, num_classes: int = 5, height: int = 96, width: int = 128, batch: int = 2):
    g = gen(seed)
    shapes = level_shapes(batch, 8, height, width)
    feats = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    cls = {k: torch.randn(batch, s[2] * s[3], num_classes, generator=g) * 2 - 2 for k, s in shapes.items()}
    box = {k: torch.rand(batch, s[2] * s[3], 4, generator=g) * 4 for k, s in shapes.items()}
    ctr = {k: torch.randn(batch, s[2] * s[3], 1, generator=g) for k, s in shapes.items()}
    images = torch.randn(batch, 3, height, width, generator=g)
    replace = {"backbone": {"__harness__": "fixed_features", "feats": feats, "strides": FPN_STRIDES, "out_channels": 8},
               "pred_net": {"__harness__": "fixed_outputs", "outputs": (cls, box, ctr)}}
    return images, replace, g


def _fcos_spec(replace, calls, device="cpu", num_classes: int = 5):
    return {"op": "module", "name": "FCOS", "ctor_args": [num_classes, 8, [8]], "ctor_kwargs": {"weights": None}, "seed": 0,
            "stub_classes": ["DetectorBackboneWithFPN", "FCOSPredictionNetwork"],
            "replace": replace, "calls": calls, "device": device}


def _loss_judge(expected_calls, keys=("loss_cls", "loss_box", "loss_ctr"), device="cpu"):
    def judge(values):
        from grader.compare import devices_ok

        outputs = values[0]["outputs"]
        matched, total, first_problem = 0, 0, None
        for i, (out, exp) in enumerate(zip(outputs, expected_calls)):
            if not isinstance(out, dict):
                return Verdict(False, f"the training forward must return a dict of losses, got {type(out).__name__}")
            for key in keys:
                total += 1
                value = out.get(key)
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    first_problem = first_problem or f"{key} missing or not a scalar tensor"
                    continue
                if close(value.reshape(()), exp[key].reshape(()), atol=1e-5, rtol=1e-3):
                    matched += 1
                elif first_problem is None:
                    if i == 1 and all(close(outputs[0].get(k, torch.tensor(0.0)).reshape(()), expected_calls[0][k].reshape(()),
                                            1e-5, 1e-3) for k in keys):
                        first_problem = ("the first step's losses are right but the second's differ: the normalizer is a running "
                                         "average, normalizer = 0.9 * normalizer + 0.1 * (positive locations per image), starting at 150, "
                                         "updated in training mode")
                    elif not math.isfinite(float(value)):
                        first_problem = f"{key} is not finite"
                    else:
                        err = abs(float(value) - float(exp[key])) / max(1e-8, abs(float(value)) + abs(float(exp[key])))
                        first_problem = f"{key} differs from the expected value (rel error {err:.1e}): {LOSS_HINTS.get(key, '')}"
        if matched == total:
            return devices_ok(values[0].get("devices", []), device) if device != "cpu" else Verdict(True)
        return Verdict(False, first_problem or "losses differ", fraction=matched / max(1, total))

    return judge


def explain_class_count(error: str) -> str | None:
    """A crash of the losses with another number of classes than VOC's 20, in words."""
    if any(words in error for words in ("must be the same as input size", "must match the size of tensor", "num_classes",
                                        "shape mismatch", "The size of tensor a", "out of bounds", "out of range")):
        return ("your loss assumes 20 classes (e.g. F.one_hot(..., num_classes=21)); this model was built with "
                "FCOS(5, ...): use self.num_classes")
    return None


def _clip_verdict(boxes: torch.Tensor, expected: torch.Tensor, height: int, width: int, image: int) -> Verdict | None:
    """Boxes must lie in the ``width x height`` image (x by the width, y by the height)."""
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or not len(boxes):
        return None
    b, eps = boxes.double(), 1e-3
    x_max, y_max = float(b[:, 0::2].max()), float(b[:, 1::2].max())
    expected_x_max = float(expected[:, 0::2].max()) if len(expected) else 0.0
    if float(b.min()) < -eps or x_max > width + eps or y_max > height + eps:
        if y_max > height + eps and y_max <= width + eps and x_max <= height + eps:
            return Verdict(False, f"image {image}: x looks clipped by the image height and y by its width: with images "
                                  "(B, 3, H, W), clip x to [0, W] and y to [0, H]")
        return Verdict(False, f"image {image}: boxes must be clipped to the image: x to [0, W], y to [0, H] (images are (B, 3, H, W))")
    if x_max <= height + eps < expected_x_max:
        return Verdict(False, f"image {image}: x looks clipped by the image height: with images (B, 3, H, W), clip x to [0, W] "
                              "and y to [0, H]")
    return None


def _fcos_checks() -> list[Check]:
    f = "FCOS"

    # The main loss checks use VOC's 20 classes: a loss that hard-codes them loses only the
    # small check below (built with 5 classes), which says so.
    def losses_make(device="cpu", num_classes=20, steps=2, seed=51):
        images, replace, g = _fixed_fcos_setup(seed, num_classes=num_classes)
        gt1 = rand_gt(g, 2, [4, 2], 6, width=128, height=96, num_classes=num_classes)
        gt1[0, 0] = torch.tensor([4.0, 6, 120, 90, 2])
        gt2 = rand_gt(g, 2, [1, 5], 6, width=128, height=96, num_classes=num_classes)
        gt1[1, 0, 4] = num_classes - 1  # the last class is a real class
        calls = [{"method": "forward", "train": True, "args": [images, gt]} for gt in (gt1, gt2)][:steps]
        spec = _fcos_spec(replace, calls, device, num_classes)
        expected = run_reference(A, {**spec, "device": "cpu"})["outputs"]
        job = Job([spec], _loss_judge(expected, device=device))
        if num_classes != 20:
            job.explain = explain_class_count
        return job

    def padding_make():
        images, replace, g = _fixed_fcos_setup(52, num_classes=20)
        calls = [{"method": "forward", "train": True, "args": [images, torch.full((2, 5, 5), -1.0)]}]
        spec = _fcos_spec(replace, calls, num_classes=20)
        expected = run_reference(A, spec)["outputs"]
        return Job([spec], _loss_judge(expected))

    def inference_make():
        height, width = 96, 128  # not square: clipping x by the height shows
        images, replace, g = _fixed_fcos_setup(53, height=height, width=width)
        calls = [{"method": "inference", "train": False, "no_grad": True, "args": [images], "kwargs": {"score_thresh": 0.3, "nms_thresh": 0.5}}]
        spec = _fcos_spec(replace, calls)
        expected = run_reference(A, spec)["outputs"][0]

        def judge(values):
            out = values[0]["outputs"][0]
            if not isinstance(out, (list, tuple)) or len(out) != len(expected):
                return Verdict(False, f"inference must return one (boxes, scores, classes) per image ({len(expected)} images)")
            for i, (o, e) in enumerate(zip(out, expected)):
                if not isinstance(o, (list, tuple)) or len(o) < 3:
                    return Verdict(False, "each image's detections must be (boxes, scores, classes)")
                boxes, scores, classes = o[0], o[1], o[2]
                if not all(isinstance(t, torch.Tensor) for t in (boxes, scores, classes)):
                    return Verdict(False, "boxes, scores and classes must be tensors")
                # Clipping first: clipped wrongly, boxes change and so does what NMS keeps.
                clip = _clip_verdict(boxes, e[0], height, width, i)
                if clip is not None:
                    return clip
                if len(scores) != len(e[1]):
                    if len(scores) > len(e[1]):
                        return Verdict(False, f"image {i}: {len(scores)} detections, expected {len(e[1])}: too many "
                                              "(score > score_thresh on the best class only, then class-specific NMS)")
                    return Verdict(False, f"image {i}: {len(scores)} detections, expected {len(e[1])}: too few "
                                          "(score = sqrt(sigmoid(class logit) * sigmoid(centerness logit)))")
                order_o = torch.sort(scores.double(), descending=True, stable=True).indices
                order_e = torch.sort(e[1].double(), descending=True, stable=True).indices
                if not close(scores[order_o], e[1][order_e], atol=1e-5, rtol=1e-4):
                    return Verdict(False, f"image {i}: scores differ: score = sqrt(sigmoid(class logit) * sigmoid(centerness logit))")
                if boxes.shape != e[0].shape or not close(boxes[order_o], e[0][order_e], atol=1e-3, rtol=1e-4):
                    return Verdict(False, f"image {i}: boxes differ (decode with fcos_apply_deltas_to_locations "
                                          "and each level's stride, clip to the image)")
                if not torch.equal(classes[order_o].long(), e[2][order_e].long()):
                    return Verdict(False, f"image {i}: classes differ (the argmax class of each location)")
            return Verdict(True)

        return Job([spec], judge)

    return [
        Check(f"{f}/losses_fixed_predictions", f, "training losses with fixed features and predictions, two steps (normalizer)", False,
              losses_make),
        Check(f"{f}/losses_other_num_classes", f, "training losses of FCOS(5, ...): the loss follows self.num_classes", False,
              lambda: losses_make(num_classes=5, steps=1, seed=54)),
        Check(f"{f}/losses_all_padding", f, "losses when the ground truth is only padding", False, padding_make),
        Check(f"{f}/inference_fixed_predictions", f, "inference with fixed predictions: scores, boxes, classes", False, inference_make),
        Check(f"{f}/cuda_losses", f, "training losses on CUDA", False, lambda: losses_make("cuda"), cuda=True),
    ]


@CHECK_SUITES.register("one_stage/hidden")
def hidden_checks() -> list[Check]:
    """Every hidden check of one_stage (registered: :func:`grader.suites.registry` lists them)."""
    return [
        _fpn_check(),
        _backbone_shapes("DetectorBackboneWithFPN/other_sizes", "other image sizes, batch 3, out_channels 32", 32, (3, 3, 160, 96)),
        _backbone_shapes("DetectorBackboneWithFPN/cuda", "forward on CUDA", 16, (1, 3, 64, 64), cuda=True),
        *_location_checks(),
        *_head_checks(),
        *_match_checks(),
        *_delta_checks(),
        *_nms_checks(),
        *_fcos_checks(),
    ]
