"""Submissions that try to score without computing (issue 11, items 1b, 1d, 1e, 1f).

* :func:`laundering_cases` -- a function answered through the grader's
  reference answer for another function (``nms`` via ``class_spec_nms``,
  ``assign_rois_to_fpn_levels`` via ``pool_roi_features``);
* :func:`forbidden_cases` -- a function the notebook forbids, by direct
  assignment, import alias, a call inside the body, or a ``globals()`` trick;
* :func:`degenerate_source` -- every solution region filled with placeholder
  outputs of the right shapes (zeros, all-background targets, empty NMS,
  constant losses);
* :func:`stored_values_source` -- every function returns the visible sanity
  cases' stored values when it recognises their inputs;
* :func:`slightly_wrong_loss_source` -- an FCOS whose classification loss is 1.5%
  off (for "hidden checks say what is wrong, not by how much").

Everything is derived from :mod:`solutions` and the sanity fixture when the tests
run (nothing committed as fixture files).
"""

from __future__ import annotations

import ast
import base64
import io
from dataclasses import dataclass, field

import torch

from grader.source import BEGIN, END, reference_source, release_source
from tests.grader_zoo.zoo import patch, replace_def

ONE, TWO = "one_stage", "two_stage"


@dataclass
class ScoringCase:
    name: str
    assignment: str
    source: str
    #: Function whose points must not exceed the honest stub's.
    target: str
    #: Functions graded with it that must keep full points.
    honest: list[str] = field(default_factory=list)
    #: Words (lower case) one of the target's messages must contain.
    words: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# Oracle laundering
# ---------------------------------------------------------------------------

NMS_VIA_CLASS_SPEC = """
def nms(boxes, scores, iou_threshold=0.5):
    # One class for every box: class_spec_nms *is* nms (answered by the reference while nms is checked?).
    return class_spec_nms(boxes, scores, torch.zeros(len(boxes), dtype=torch.long, device=boxes.device), iou_threshold)
"""

ASSIGN_VIA_POOL = """
def assign_rois_to_fpn_levels(boxes, min_level=3, max_level=5, canonical_level=4, canonical_size=128.0):
    # Constant feature maps holding their level number: RoIAlign of any box returns its level.
    strides = {"p3": 8, "p4": 16, "p5": 32}
    feats = {f"p{k}": torch.full((1, 1, 448 // strides[f"p{k}"], 448 // strides[f"p{k}"]), float(k), dtype=torch.float32)
             for k in (3, 4, 5)}
    pooled = pool_roi_features(feats, strides, torch.zeros(len(boxes), dtype=torch.long), boxes.float().clamp(0, 440), (1, 1))
    return pooled.reshape(-1).round().long()
"""


def laundering_cases() -> list[ScoringCase]:
    ref, ref2 = reference_source(ONE), reference_source(TWO)
    return [
        ScoringCase("nms_via_class_spec_nms", ONE, replace_def(ref, "nms", NMS_VIA_CLASS_SPEC), "nms"),
        ScoringCase("assign_rois_via_pool_roi_features", TWO, replace_def(ref2, "assign_rois_to_fpn_levels", ASSIGN_VIA_POOL),
                    "assign_rois_to_fpn_levels"),
    ]


# ---------------------------------------------------------------------------
# Functions the notebook forbids
# ---------------------------------------------------------------------------

def forbidden_cases() -> list[ScoringCase]:
    ref, ref2 = reference_source(ONE), reference_source(TWO)
    words = ("torchvision.ops",)
    return [
        ScoringCase("nms_direct_assignment", ONE, replace_def(ref, "nms", "import torchvision\nnms = torchvision.ops.nms\n"),
                    "nms", ["class_spec_nms"], words),
        ScoringCase("nms_import_alias", ONE, replace_def(ref, "nms", "from torchvision.ops import nms as _tv_nms\n"
                                                                    "def nms(boxes, scores, iou_threshold=0.5):\n"
                                                                    "    return _tv_nms(boxes, scores, iou_threshold)\n"),
                    "nms", ["class_spec_nms"], words),
        ScoringCase("nms_call_in_body", ONE, replace_def(ref, "nms", "def nms(boxes, scores, iou_threshold=0.5):\n"
                                                                    "    import torchvision\n"
                                                                    "    return torchvision.ops.boxes.batched_nms("
                                                                    "boxes, scores, torch.zeros_like(scores).long(), iou_threshold)\n"),
                    "nms", ["class_spec_nms"], words),
        # Invisible to a static reading (the name is computed): the sandbox makes the call raise.
        ScoringCase("nms_globals_trick", ONE, replace_def(ref, "nms", "def nms(boxes, scores, iou_threshold=0.5):\n"
                                                                     "    return None\n"
                                                                     "import torchvision\n"
                                                                     "globals()['n' + 'ms'] = getattr(torchvision.ops, 'n' + 'ms')\n"),
                    "nms", ["class_spec_nms"], ("not allowed",)),
        ScoringCase("class_spec_nms_batched_nms", ONE, replace_def(ref, "class_spec_nms", "import torchvision.ops as tvo\n"
                                                                   "def class_spec_nms(boxes, scores, class_ids, iou_threshold=0.5):\n"
                                                                   "    return tvo.batched_nms(boxes, scores, class_ids, iou_threshold)\n"),
                    "class_spec_nms", ["nms"], words),
        ScoringCase("iou_box_iou", TWO, replace_def(ref2, "iou", "from torchvision.ops import box_iou\n"
                                                                "def iou(boxes1, boxes2):\n    return box_iou(boxes1, boxes2)\n"),
                    "iou", ["generate_fpn_anchors"], words),
    ]


# ---------------------------------------------------------------------------
# Degenerate code: placeholder outputs of the right shapes
# ---------------------------------------------------------------------------

#: ``{region owner: code}`` (owner: function, or ``Class.method``); regions not named keep the reference.
DEGENERATE = {
    ONE: {
        "get_fpn_location_coords": """
location_coords = {lvl: torch.zeros(s[2] * s[3], 2, dtype=dtype, device=device) for lvl, s in shape_per_fpn_level.items()}
""",
        "nms": "keep = torch.zeros(0, dtype=torch.long, device=boxes.device)",
        "class_spec_nms": "keep = torch.zeros(0, dtype=torch.long, device=boxes.device)",
        "DetectorBackboneWithFPN.__init__": "pass  # no FPN layers",
        "FCOSPredictionNetwork.__init__": "pass  # no layers",
        "DetectorBackboneWithFPN.forward": """
for _lvl, _s in (("p3", 8), ("p4", 16), ("p5", 32)):
    fpn_feats[_lvl] = images.new_zeros(images.shape[0], self.out_channels, -(-images.shape[2] // _s), -(-images.shape[3] // _s))
""",
        "FCOSPredictionNetwork.forward": """
for _lvl, _f in feats_per_fpn_level.items():
    _n = _f.shape[2] * _f.shape[3]
    class_logits[_lvl] = _f.new_zeros(_f.shape[0], _n, self.num_classes)
    boxreg_deltas[_lvl] = _f.new_zeros(_f.shape[0], _n, 4)
    centerness_logits[_lvl] = _f.new_zeros(_f.shape[0], _n, 1)
""",
        "fcos_match_locations_to_gt": """
_lead = gt_boxes.shape[:-2]
matched_gt_boxes = {lvl: torch.full((*_lead, len(loc), 5), -1.0, dtype=gt_boxes.dtype, device=gt_boxes.device)
                    for lvl, loc in locations_per_fpn_level.items()}
""",
        "fcos_get_deltas_from_locations": """
deltas = torch.full((*torch.broadcast_shapes(gt_boxes.shape[:-1], locations.shape[:-1]), 4), -1.0,
                    dtype=gt_boxes.dtype, device=gt_boxes.device)
""",
        "fcos_apply_deltas_to_locations": "output_boxes = torch.cat([locations, locations], dim=-1).expand(*deltas.shape[:-1], 4).clone()",
        "fcos_make_centerness_targets": "centerness = torch.full(deltas.shape[:-1], -1.0, dtype=deltas.dtype, device=deltas.device)",
        "FCOS.forward": """
_zero = sum(p.sum() for p in self.parameters()) * 0.0
losses = {"loss_cls": _zero + 1.0, "loss_box": _zero, "loss_ctr": _zero}
""",
        "FCOS.inference": """
detections = [Detections(images.new_zeros(0, 4), images.new_zeros(0), torch.zeros(0, dtype=torch.long, device=images.device))
              for _ in range(len(images))]
""",
    },
    TWO: {
        "iou": "iou_matrix = boxes1.new_zeros(len(boxes1), len(boxes2))",
        "generate_fpn_anchors": """
anchors_per_fpn_level = {lvl: loc.new_zeros(len(loc) * len(aspect_ratios), 4) for lvl, loc in locations_per_fpn_level.items()}
""",
        "rcnn_match_anchors_to_gt": """
matched_gt_boxes = torch.full((*gt_boxes.shape[:-2], anchors.shape[-2], 5), -1.0, dtype=gt_boxes.dtype, device=gt_boxes.device)
""",
        "rcnn_get_deltas_from_anchors": """
deltas = torch.full((*torch.broadcast_shapes(gt_boxes.shape[:-1], anchors.shape[:-1]), 4), -1e8,
                    dtype=gt_boxes.dtype, device=gt_boxes.device)
""",
        "rcnn_apply_deltas_to_anchors": "output_boxes = anchors.expand(*deltas.shape[:-1], 4).clone()",
        "sample_rpn_training": """
fg_idx = torch.zeros(0, dtype=torch.long, device=gt_boxes.device)
bg_idx = torch.zeros(0, dtype=torch.long, device=gt_boxes.device)
""",
        "flatten_anchor_predictions": """
flat = prediction.new_zeros(prediction.shape[0], prediction.shape[1] // values_per_anchor * prediction.shape[2] * prediction.shape[3],
                            values_per_anchor)
""",
        "RPNPredictionNetwork.__init__": "pass  # no layers",
        "RPNPredictionNetwork.forward": """
for _lvl, _f in feats_per_fpn_level.items():
    _n = _f.shape[2] * _f.shape[3] * self.num_anchors
    object_logits[_lvl] = _f.new_zeros(_f.shape[0], _n)
    boxreg_deltas[_lvl] = _f.new_zeros(_f.shape[0], _n, 4)
""",
        "RPN.compute_losses": """
_zero = sum(v.sum() for v in object_logits.values()) * 0.0
losses = {"loss_rpn_obj": _zero + 0.7, "loss_rpn_box": _zero, "rpn_num_fg": _zero}
""",
        "RPN.predict_proposals": """
_first = next(iter(boxreg_deltas.values()))
proposals = [_first.new_zeros(0, 4) for _ in range(len(_first))]
proposal_scores = [_first.new_zeros(0) for _ in range(len(_first))]
""",
        "FasterRCNN.forward": """
_zero = sum(p.sum() for p in self.parameters()) * 0.0
losses = {"loss_rpn_obj": rpn_output["loss_rpn_obj"], "loss_rpn_box": rpn_output["loss_rpn_box"], "loss_cls": _zero + 3.0}
""",
        "assign_rois_to_fpn_levels": "levels = torch.full((len(boxes),), min_level, dtype=torch.long, device=boxes.device)",
        "pool_roi_features": """
_first = next(iter(feats_per_fpn_level.values()))
pooled = _first.new_zeros(len(boxes), _first.shape[1], *output_size)
""",
    },
}


def _region_owners(source: str) -> dict[int, str]:
    """``{line number of a BEGIN SOLUTION marker: owner}``."""
    tree = ast.parse(source)
    spans = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            spans += [(f"{node.name}.{m.name}", m.lineno, m.end_lineno) for m in node.body if isinstance(m, ast.FunctionDef)]
        elif isinstance(node, ast.FunctionDef):
            spans.append((node.name, node.lineno, node.end_lineno))
    owners = {}
    for i, line in enumerate(source.splitlines(), 1):
        if line.strip().startswith(BEGIN):
            owners[i] = next((n for n, a, b in spans if a <= i <= b), "")
    return owners


def fill_regions(assignment: str, fills: dict[str, str], default: str | None = None) -> str:
    """The reference source with the solution regions of ``fills``' owners replaced by
    their code (``default``: the code of every other region; None keeps the reference)."""
    source = reference_source(assignment)
    owners = _region_owners(source)
    out, skipping = [], False
    for i, line in enumerate(source.splitlines(), 1):
        if line.strip().startswith(BEGIN):
            owner = owners.get(i, "")
            code = fills.get(owner, default)
            if code is not None:
                indent = line[: len(line) - len(line.lstrip())]
                out += [indent + c for c in code.strip("\n").splitlines()]
                skipping = True
                continue
        if line.strip().startswith(END) and skipping:
            skipping = False
            continue
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def degenerate_source(assignment: str) -> str:
    """Placeholder outputs of the right shapes wherever the zoo has one; other regions stubbed."""
    return fill_regions(assignment, DEGENERATE[assignment], default="raise NotImplementedError()")


def stub_source(assignment: str) -> str:
    """The honest stub: what students download."""
    return release_source(assignment)


# ---------------------------------------------------------------------------
# Returning the visible cases' stored values
# ---------------------------------------------------------------------------

STORED_LOOKUP = '''
import base64 as _b64, io as _io
_STORED = torch.load(_io.BytesIO(_b64.b64decode({blob!r})), weights_only=True)


def _same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _stored(name, args):
    for case in _STORED:
        if case["name"] == name and _same(list(case["args"]), list(args)[:len(case["args"])]):
            return case["output"]
    raise NotImplementedError("not one of the visible cases")
'''


def stored_values_source(assignment: str) -> str:
    """Every function whose visible case is a plain call returns the stored expected output
    for the visible inputs (and raises otherwise); the rest is the honest stub."""
    from grader.sanity import load_fixtures

    cases = [{"name": c["spec"]["name"], "args": c["spec"]["args"], "output": c["expected"]["output"]}
             for c in load_fixtures(assignment)["cases"] if c["spec"]["op"] == "call"]
    buffer = io.BytesIO()
    torch.save(cases, buffer)
    blob = base64.b64encode(buffer.getvalue()).decode()
    source = release_source(assignment)
    for name in sorted({c["name"] for c in cases}):
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
        args = [a.arg for a in node.args.args]
        source = replace_def(source, name, f"def {name}({ast.unparse(node.args)}):\n"
                                           f"    return _stored({name!r}, [{', '.join(args)}])\n")
    return source + STORED_LOOKUP.format(blob=blob)


# ---------------------------------------------------------------------------
# Slightly wrong values (hidden feedback)
# ---------------------------------------------------------------------------

def slightly_wrong_loss_source() -> str:
    """FCOS whose classification loss is 1.5% too large: a hidden check fails, and its
    message must not say by how much."""
    ref = reference_source(ONE)
    tree = ast.parse(ref)
    fcos = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FCOS")
    segment = ast.get_source_segment(ref, fcos)
    line = next(line for line in segment.splitlines() if line.strip().startswith("loss_cls ="))
    return patch(ref, "FCOS", line, line + " * 1.015")


def short_nms_source() -> str:
    """NMS that drops its last kept box: the hidden count of kept boxes must not be printed."""
    ref = reference_source(ONE)
    return patch(ref, "nms", "    return keep", "    return keep[:-1]")
