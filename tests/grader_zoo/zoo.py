"""Zoos of submissions for the grader's tests, generated from the reference.

* :func:`bad_submissions` -- hostile or broken submissions (exceptions, exits,
  hangs, floods, memory bombs, wrong types, mutation, importing the
  reference, monkeypatching, writing files, corrupt notebooks, ...).
* :func:`bug_submissions` -- plausible student bugs (transposed locations,
  x/y swapped deltas, IoU with a wrong union, NMS keeping ties, anchors with
  w/h swapped, RoI targets in the wrong order, ...).

Each entry is a :class:`Entry`: the assignment, how to build the submission
(a source string, or a notebook file written into a folder), which function's
checks must lose points (and which check, with which words in its message),
and an honest function of the same submission that must keep its points.
Nothing here is committed as a fixture file: every submission is derived
from :mod:`solutions` when the tests run, so the zoo follows the reference.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grader.source import reference_source


@dataclass
class Entry:
    name: str
    assignment: str
    #: Returns the submission: a source string, or (given a folder) the path of a file it wrote.
    build: Callable[..., object]
    #: The function whose points must drop (None: every function, e.g. an unreadable file).
    target: str | None
    #: Check id that must fail (None: every check of ``target``).
    check: str | None = None
    #: Words (lower case) one of the failing messages must contain.
    words: tuple[str, ...] = ()
    #: A function that must keep all its points.
    honest: str | None = None
    #: Expected status of the failing check(s), when it matters.
    status: str | None = None
    #: The entry needs a notebook file (build takes a folder).
    file: bool = False
    #: Functions to grade (default: target and honest).
    functions: list[str] | None = None
    #: Extra expectation on the whole report.
    expect: Callable | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Source surgery
# ---------------------------------------------------------------------------


def _def_span(source: str, name: str) -> tuple[int, int]:
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return start - 1, node.end_lineno
    raise KeyError(name)


def def_text(source: str, name: str) -> str:
    a, b = _def_span(source, name)
    return "\n".join(source.splitlines()[a:b])


def replace_def(source: str, name: str, new: str) -> str:
    lines = source.splitlines()
    a, b = _def_span(source, name)
    return "\n".join(lines[:a] + new.strip("\n").splitlines() + lines[b:]) + "\n"


def remove_def(source: str, name: str) -> str:
    return replace_def(source, name, "")


def patch(source: str, name: str, old: str, new: str, count: int = 1) -> str:
    """Replace ``old`` by ``new`` inside the definition of ``name`` (must be found)."""
    text = def_text(source, name)
    if old not in text:
        raise AssertionError(f"zoo patch: {old!r} not found in {name}")
    return replace_def(source, name, text.replace(old, new, count))


def body_prefix(source: str, name: str, code: str) -> str:
    """Insert ``code`` as the first statement of function ``name``'s body."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):  # docstring
        first = node.body[1]
    lines = source.splitlines()
    indent = " " * first.col_offset
    insert = [indent + line for line in code.strip("\n").splitlines()]
    return "\n".join(lines[: first.lineno - 1] + insert + lines[first.lineno - 1:]) + "\n"


def stub(source: str, name: str, body: str) -> str:
    """Make function ``name`` run ``body`` (indented by the caller's conventions) first."""
    return body_prefix(source, name, body)


# ---------------------------------------------------------------------------
# Notebooks
# ---------------------------------------------------------------------------


def notebook_from_source(source: str, assignment: str, *, metadata: bool = True, test_cells: bool = True,
                         edit_tests: bool = False) -> nbformat.NotebookNode:
    """A notebook with one solution cell per top-level definition (and grade cells)."""
    from grader.functions import STUDENT_FUNCTIONS

    tree = ast.parse(source)
    lines = source.splitlines()
    cells = [nbformat.v4.new_code_cell("import math\nimport torch\nfrom torch import nn\n%matplotlib inline")]
    cells[0].metadata["nbgrader"] = {"grade": False, "solution": False, "locked": True, "grade_id": "imports", "schema_version": 3}
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        text = "\n".join(lines[start:node.end_lineno])
        cell = nbformat.v4.new_code_cell(text)
        if metadata:
            cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                         "grade_id": f"cell-{len(cells)}", "schema_version": 3}
        cells.append(cell)
        name = getattr(node, "name", None)
        if test_cells and name in STUDENT_FUNCTIONS[assignment]:
            body = ('print("all tests passed")' if edit_tests else
                    f'from grader.notebook import grade_cell\ngrade_cell("{assignment}", "{name}", globals())')
            test = nbformat.v4.new_code_cell(body)
            if metadata:
                test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1,
                                             "grade_id": f"test-{name}", "schema_version": 3}
            cells.append(test)
    cells.append(nbformat.v4.new_code_cell("model = FCOS(20, 64, [64, 64])\nprint('training...')\nfor i in range(10**9):\n    pass"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_notebook(folder: Path, nb, name: str = "submission.ipynb") -> Path:
    path = Path(folder) / name
    path.write_text(nbformat.writes(nb))
    return path


def _file(fn):
    """Decorator for builders that take a folder and write a file there."""
    return fn


# ---------------------------------------------------------------------------
# The bad-submission zoo
# ---------------------------------------------------------------------------

ONE, TWO = "one_stage", "two_stage"


def bad_submissions(write_target: Path | None = None) -> list[Entry]:
    ref = reference_source(ONE)
    ref2 = reference_source(TWO)
    target_file = str(write_target or "/tmp/grader-zoo-target.txt")

    def nb_with(source, **kwargs):
        def build(folder):
            return write_notebook(folder, notebook_from_source(source, ONE, **kwargs))
        return build

    def syntax_error_cell(folder):
        nb = notebook_from_source(ref, ONE)
        for cell in nb.cells:
            if cell.source.startswith("def nms("):
                cell.source = cell.source.replace("def nms(", "def nms(((", 1)
        return write_notebook(folder, nb)

    def corrupt(folder):
        text = nbformat.writes(notebook_from_source(ref, ONE))
        path = Path(folder) / "submission.ipynb"
        path.write_text(text[: len(text) // 2])
        return path

    def non_utf8(folder):
        text = nbformat.writes(notebook_from_source(ref, ONE)).replace("Greedy NMS", "Greedy NMS \u00e9\u00e8")
        path = Path(folder) / "submission.ipynb"
        path.write_bytes(text.encode("latin-1", errors="replace"))
        return path

    def not_a_notebook(folder):
        path = Path(folder) / "submission.ipynb"
        path.write_text(json.dumps({"hello": "world"}))
        return path

    nms_correct = def_text(ref, "nms")
    C = "fcos_make_centerness_targets"  # a cheap function to break
    return [
        Entry("exception", ONE, lambda: stub(ref, C, 'raise ValueError("student bug")'), C, f"{C}/sanity",
              ("valueerror", "student bug"), honest="get_fpn_location_coords"),
        Entry("syntax_error_in_a_cell", ONE, syntax_error_cell, "nms", None, ("syntax error",), honest="class_spec_nms", file=True),
        Entry("missing_function", ONE, lambda: remove_def(ref, "nms"), "nms", None, ("not defined",), honest="class_spec_nms"),
        Entry("deleted_test_cells", ONE, nb_with(ref, test_cells=False), None, None, (), honest="fcos_make_centerness_targets", file=True,
              functions=["fcos_make_centerness_targets", "get_fpn_location_coords"]),
        Entry("edited_test_cells", ONE, nb_with(ref, edit_tests=True), None, None, (), honest="fcos_make_centerness_targets", file=True,
              functions=["fcos_make_centerness_targets", "get_fpn_location_coords"]),
        Entry("no_nbgrader_metadata", ONE, nb_with(ref, metadata=False), None, None, (), honest="fcos_make_centerness_targets", file=True,
              functions=["fcos_make_centerness_targets", "get_fpn_location_coords"]),
        Entry("corrupt_ipynb", ONE, corrupt, "*", None, ("not a valid notebook",), file=True, functions=["nms"]),
        Entry("non_utf8_ipynb", ONE, non_utf8, "*", None, ("utf-8",), file=True, functions=["nms"]),
        Entry("json_but_not_a_notebook", ONE, not_a_notebook, "*", None, ("not a jupyter notebook",), file=True, functions=["nms"]),
        Entry("infinite_loop", ONE, lambda: stub(ref, C, "while True:\n    pass"), C, None, ("time limit",),
              honest="get_fpn_location_coords", status="timeout"),
        Entry("infinite_loop_at_top_level", ONE, lambda: ref + "\nwhile True:\n    pass\n", "*", None, ("time limit",),
              functions=["nms"]),
        Entry("sys_exit", ONE, lambda: stub(ref, C, "import sys\nsys.exit(0)"), C, None, ("sys.exit",),
              honest="get_fpn_location_coords"),
        Entry("sys_exit_at_top_level", ONE, lambda: ref + "\nimport sys\nsys.exit(0)\n", "*", None, ("sys.exit",), functions=["nms"]),
        Entry("os_exit", ONE, lambda: stub(ref, C, "import os\nos._exit(0)"), C, None, ("exited",),
              honest="get_fpn_location_coords"),
        Entry("kill_itself", ONE, lambda: stub(ref, C, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"), C, None,
              ("killed",), honest="get_fpn_location_coords"),
        Entry("kill_its_parent", ONE, lambda: stub(ref, C, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"), C, None,
              (), honest="get_fpn_location_coords"),
        Entry("huge_output", ONE, lambda: stub(ref, C, "while True:\n    print('x' * 100000)"), C, None, ("output limit",),
              honest="get_fpn_location_coords"),
        Entry("memory_bomb", ONE, lambda: stub(ref, C, "hog = [bytearray(1 << 30) for _ in range(64)]"), C, None, ("memory",),
              honest="get_fpn_location_coords"),
        Entry("nan_results", TWO, lambda: patch(ref2, "iou", "    return iou_matrix", "    return iou_matrix * float('nan')"),
              "iou", "iou/sanity", ("nan",), honest="generate_fpn_anchors"),
        Entry("inf_results", TWO, lambda: patch(ref2, "iou", "    return iou_matrix", "    return iou_matrix / 0.0"),
              "iou", "iou/random", ("inf", "nan"), honest="generate_fpn_anchors"),
        Entry("wrong_shape", TWO, lambda: patch(ref2, "iou", "    return iou_matrix", "    return iou_matrix.T"),
              "iou", "iou/random", ("transposed",), honest="generate_fpn_anchors"),
        Entry("wrong_dtype", ONE, lambda: patch(ref, "nms", "    return keep", "    return keep.int()"),
              "nms", "nms/sanity_05", ("int64",), honest="get_fpn_location_coords"),
        Entry("wrong_device", ONE, lambda: patch(ref, "nms", "    return keep", "    return keep.to('meta')"),
              "nms", "nms/sanity_05", ("device",), honest="get_fpn_location_coords"),
        Entry("wrong_return_type", ONE, lambda: patch(ref, "nms", "    return keep", "    return keep.tolist()"),
              "nms", "nms/sanity_05", ("expected a tensor",), honest="get_fpn_location_coords"),
        Entry("arbitrary_object_returned", ONE,
              lambda: patch(ref, "nms", "    return keep",
                            "    class Sneaky:\n        def __reduce__(self):\n            return (print, ('pwned',))\n    return Sneaky()"),
              "nms", "nms/sanity_05", ("sneaky",), honest="get_fpn_location_coords"),
        Entry("in_place_mutation", ONE,
              lambda: patch(ref, "fcos_apply_deltas_to_locations", "distances = deltas.clamp(min=0) * stride",
                            "distances = deltas.clamp_(min=0) * stride"),
              "fcos_apply_deltas_to_locations", "fcos_apply_deltas_to_locations/no_mutation", ("in place",),
              honest="get_fpn_location_coords"),
        Entry("import_solutions_inside", ONE,
              lambda: replace_def(ref, "nms", "def nms(boxes, scores, iou_threshold=0.5):\n"
                                  "    from solutions.non_max_suppression import nms as _n\n    return _n(boxes, scores, iou_threshold)\n"),
              "nms", None, ("not allowed",), honest="get_fpn_location_coords"),
        Entry("import_solutions_top_level", ONE,
              lambda: remove_def(ref, "nms") + "\nfrom solutions.non_max_suppression import nms\n",
              "nms", None, ("not defined",), honest="get_fpn_location_coords"),
        Entry("import_grader", ONE,
              lambda: stub(ref, C, "import grader.checks_one_stage"), C, None, ("not allowed",), honest="get_fpn_location_coords"),
        Entry("importlib_solutions", ONE,
              lambda: stub(ref, "nms", "import importlib\nreturn importlib.import_module('solutions').nms(boxes, scores, iou_threshold)"),
              "nms", None, ("not allowed", "no module"), honest="get_fpn_location_coords"),
        Entry("monkeypatch_torch", ONE,
              lambda: remove_def(ref, "nms") + "\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
                      "import torch.testing\ntorch.testing.assert_close = lambda *a, **k: None\n"
                      "torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)\n"
                      "def nms(boxes, scores, iou_threshold=0.5):\n    return torch.arange(3)\n",
              "nms", None, (), honest="get_fpn_location_coords"),
        Entry("monkeypatch_harness", ONE,
              lambda: stub(ref, "nms", "import sys\nmain = sys.modules['__main__']\n"
                                       "main.to_plain = lambda obj, devices=None, _depth=0: {'output': torch.zeros(0, dtype=torch.long)}\n"
                                       "main.judge_indices = lambda *a: True\nreturn torch.zeros(0, dtype=torch.long)"),
              "nms", None, (), honest="get_fpn_location_coords"),
        Entry("write_result_files", ONE,
              lambda: replace_def(ref, "nms", nms_correct.replace(
                  "    keep = None\n",
                  f"    for _path in ({target_file!r}, 'results.json', '/tmp/results.json'):\n"
                  "        try:\n"
                  "            open(_path, 'w').write('{\"score\": 1000}')\n"
                  "        except OSError:\n"
                  "            pass\n"
                  "    keep = None\n", 1)),
              None, None, (), honest="nms", functions=["nms"]),
        Entry("two_stage_without_the_reused_code", TWO,
              lambda: remove_def(remove_def(remove_def(remove_def(ref2, "DetectorBackboneWithFPN"), "get_fpn_location_coords"),
                                            "class_spec_nms"), "nms"),
              None, None, (), honest="FasterRCNN", functions=["RPN", "FasterRCNN"],
              notes=["the grader supplies the first assignment's code the second reuses"]),
        Entry("slow_sleep", ONE, lambda: stub(ref, C, "import time\ntime.sleep(3600)"), C, None, ("time limit",),
              honest="get_fpn_location_coords", status="timeout"),
    ]


# ---------------------------------------------------------------------------
# The plausible-bug zoo
# ---------------------------------------------------------------------------


NMS_KEEPING_TIES = """
def nms(boxes, scores, iou_threshold=0.5):
    # A plausible bug: a box only suppresses boxes with a strictly lower score.
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        overlaps = iou(boxes[i:i + 1], boxes)[0]
        suppressed |= (overlaps > iou_threshold) & (scores < scores[i])
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)
"""


H1 = "fcos_make_centerness_targets"  # cheap honest functions
H2 = "iou"


def bug_submissions() -> list[Entry]:
    ref = reference_source(ONE)
    ref2 = reference_source(TWO)
    return [
        Entry("transposed_locations", ONE,
              lambda: patch(ref, "get_fpn_location_coords", 'grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")',
                            'grid_x, grid_y = torch.meshgrid(xs, ys, indexing="ij")'),
              "get_fpn_location_coords", "get_fpn_location_coords/sanity_first_five", ("transposed",), honest=H1),
        Entry("locations_without_half_stride", ONE,
              lambda: patch(patch(ref, "get_fpn_location_coords", "(torch.arange(width, dtype=dtype, device=device) + 0.5)",
                                  "torch.arange(width, dtype=dtype, device=device)"),
                            "get_fpn_location_coords", "(torch.arange(height, dtype=dtype, device=device) + 0.5)",
                            "torch.arange(height, dtype=dtype, device=device)"),
              "get_fpn_location_coords", "get_fpn_location_coords/non_square", ("half a stride",), honest=H1),
        Entry("fpn_bilinear_upsampling", ONE,
              lambda: patch(ref, "DetectorBackboneWithFPN", 'mode="nearest")', 'mode="bilinear")', count=2),
              "DetectorBackboneWithFPN", "DetectorBackboneWithFPN/fpn_computation", ("fpn values differ",), honest=H1),
        Entry("head_flatten_without_permute", ONE,
              lambda: patch(ref, "FCOSPredictionNetwork", "return x.permute(0, 2, 3, 1).flatten(1, 2)",
                            "return x.reshape(x.shape[0], x.shape[2] * x.shape[3], -1)"),
              "FCOSPredictionNetwork", "FCOSPredictionNetwork/forward_same_weights", ("permut",), honest=H1),
        Entry("centerness_on_class_stem", ONE,
              lambda: patch(ref, "FCOSPredictionNetwork", "flatten(self.pred_ctr(box_feats))", "flatten(self.pred_ctr(cls_feats))"),
              "FCOSPredictionNetwork", "FCOSPredictionNetwork/forward_same_weights", ("box stem",), honest=H1),
        Entry("no_class_prior_bias", ONE,
              lambda: patch(ref, "FCOSPredictionNetwork", "nn.init.constant_(self.pred_cls.bias, -math.log(99))", "pass"),
              "FCOSPredictionNetwork", "FCOSPredictionNetwork/init", ("log(99)",), honest=H1),
        Entry("match_largest_box_wins", ONE,
              lambda: patch(ref, "fcos_match_locations_to_gt", "cost = torch.where(candidate, area, torch.full_like(area, math.inf))",
                            "cost = torch.where(candidate, -area, torch.full_like(area, math.inf))"),
              "fcos_match_locations_to_gt", "fcos_match_locations_to_gt/ties", ("smallest",), honest=H1),
        Entry("match_background_zeros", ONE,
              lambda: patch(ref, "fcos_match_locations_to_gt", "BACKGROUND)", "0.0)", count=-1),
              "fcos_match_locations_to_gt", "fcos_match_locations_to_gt/all_padding", (), honest=H1),
        Entry("match_upper_bound_inclusive", ONE,
              lambda: patch(ref, "fcos_match_locations_to_gt", "< upper[", "<= upper["),
              "fcos_match_locations_to_gt", "fcos_match_locations_to_gt/boundaries", (), honest=H1),
        Entry("deltas_xy_swapped", ONE,
              lambda: patch(ref, "fcos_get_deltas_from_locations",
                            "ltrb = torch.cat([locations - boxes[..., :2], boxes[..., 2:] - locations], dim=-1) / stride",
                            "ltrb = torch.cat([locations - boxes[..., :2], boxes[..., 2:] - locations], dim=-1)[..., [1, 0, 3, 2]] / stride"),
              "fcos_get_deltas_from_locations", "fcos_get_deltas_from_locations/random", ("swapped",), honest=H1),
        Entry("deltas_not_divided_by_stride", ONE,
              lambda: patch(ref, "fcos_get_deltas_from_locations", "dim=-1) / stride", "dim=-1)"),
              "fcos_get_deltas_from_locations", "fcos_get_deltas_from_locations/random", ("divided by the stride",), honest=H1),
        Entry("centerness_background_not_minus_one", ONE,
              lambda: patch(ref, "fcos_make_centerness_targets", "torch.full_like(left, BACKGROUND)", "torch.zeros_like(left)"),
              "fcos_make_centerness_targets", "fcos_make_centerness_targets/background", ("-1 for background",),
              honest="get_fpn_location_coords"),
        Entry("apply_deltas_clamp_in_place", ONE,
              lambda: patch(ref, "fcos_apply_deltas_to_locations", "deltas.clamp(min=0)", "deltas.clamp_(min=0)"),
              "fcos_apply_deltas_to_locations", "fcos_apply_deltas_to_locations/no_mutation", ("in place",), honest=H1),
        Entry("nms_keeps_ties", ONE,
              lambda: replace_def(ref, "nms", NMS_KEEPING_TIES),
              "nms", "nms/ties", ("ties",), honest="get_fpn_location_coords"),
        Entry("nms_suppresses_at_threshold", ONE,
              lambda: patch(ref, "nms", "if threshold.item() > iou_threshold:", "if True:"),
              "nms", "nms/iou_equals_threshold", ("equals the threshold",), honest="get_fpn_location_coords"),
        Entry("class_spec_nms_ignores_classes", ONE,
              lambda: patch(ref, "class_spec_nms", "keep = nms(boxes - boxes.min() + offsets, scores, iou_threshold)",
                            "keep = nms(boxes, scores, iou_threshold)"),
              "class_spec_nms", "class_spec_nms/cross_class", ("different classes",), honest=H1),
        Entry("fcos_box_loss_on_background", ONE,
              lambda: patch(ref, "FCOS", "loss_box = torch.where(foreground[..., None], loss_box, torch.zeros_like(loss_box))", "pass"),
              "FCOS", "FCOS/losses_fixed_predictions", ("loss_box",), honest=H1),
        Entry("anchors_wh_swapped", TWO,
              lambda: patch(ref2, "generate_fpn_anchors", "widths = torch.sqrt(area / ratios)", "widths = torch.sqrt(area * ratios)"),
              "generate_fpn_anchors", "generate_fpn_anchors/all_levels", ("swapped",), honest="iou"),
        Entry("anchors_anchor_major", TWO,
              lambda: patch(ref2, "generate_fpn_anchors", "anchors_per_fpn_level[level] = corners.reshape(-1, 4)",
                            "anchors_per_fpn_level[level] = corners.transpose(0, 1).reshape(-1, 4)"),
              "generate_fpn_anchors", "generate_fpn_anchors/all_levels", ("location-major",), honest="iou"),
        Entry("iou_wrong_union", TWO,
              lambda: patch(ref2, "iou", "union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter",
                            "union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :]"),
              "iou", "iou/random", ("union",), honest="generate_fpn_anchors"),
        Entry("iou_plus_one", TWO,
              lambda: replace_def(ref2, "iou", "def iou(boxes1, boxes2):\n"
                                  "    w = (torch.minimum(boxes1[:, None, 2], boxes2[None, :, 2]) "
                                  "- torch.maximum(boxes1[:, None, 0], boxes2[None, :, 0]) + 1).clamp(min=0)\n"
                                  "    h = (torch.minimum(boxes1[:, None, 3], boxes2[None, :, 3]) "
                                  "- torch.maximum(boxes1[:, None, 1], boxes2[None, :, 1]) + 1).clamp(min=0)\n"
                                  "    inter = w * h\n"
                                  "    a1 = ((boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1))[:, None]\n"
                                  "    a2 = ((boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1))[None, :]\n"
                                  "    return inter / (a1 + a2 - inter)\n"),
              "iou", "iou/random", ("+1",), honest="generate_fpn_anchors"),
        Entry("match_neutral_as_background", TWO,
              lambda: patch(ref2, "rcnn_match_anchors_to_gt", "sentinel = torch.where(is_neutral, NEUTRAL, BACKGROUND).to(gt.dtype)",
                            "sentinel = torch.full_like(best_iou, BACKGROUND)"),
              "rcnn_match_anchors_to_gt", "rcnn_match_anchors_to_gt/random_batched", ("neutral",), honest="iou"),
        Entry("rcnn_deltas_xy_swapped", TWO,
              lambda: patch(ref2, "rcnn_get_deltas_from_anchors", "[(bx - px) / pw, (by - py) / ph, torch.log(bw / pw), torch.log(bh / ph)]",
                            "[(by - py) / ph, (bx - px) / pw, torch.log(bh / ph), torch.log(bw / pw)]"),
              "rcnn_get_deltas_from_anchors", "rcnn_get_deltas_from_anchors/random", ("swapped",), honest="iou"),
        Entry("rcnn_apply_clamps_in_place", TWO,
              lambda: patch(ref2, "rcnn_apply_deltas_to_anchors", "dx, dy, dw, dh = deltas.unbind(dim=-1)",
                            "deltas[..., 2:].clamp_(max=MAX_LOG_SCALE)\n    dx, dy, dw, dh = deltas.unbind(dim=-1)"),
              "rcnn_apply_deltas_to_anchors", "rcnn_apply_deltas_to_anchors/no_mutation", ("in place",), honest="iou"),
        Entry("sampling_not_random", TWO,
              lambda: patch(ref2, "sample_rpn_training", "keys = torch.rand(candidates.shape, device=candidates.device)",
                            "keys = torch.arange(candidates.numel(), device=candidates.device, dtype=torch.float32).view(candidates.shape)"),
              "sample_rpn_training", "sample_rpn_training/random", ("random",), honest="iou"),
        Entry("sampling_neutral_as_background", TWO,
              lambda: patch(ref2, "sample_rpn_training", "is_bg = classes == BACKGROUND", "is_bg = classes < 0"),
              "sample_rpn_training", "sample_rpn_training/few_candidates", ("neutral",), honest="iou"),
        Entry("roi_features_in_level_order", TWO,
              lambda: patch(ref2, "pool_roi_features", "return pooled",
                            "return pooled[torch.sort(levels, stable=True).indices]"),
              "pool_roi_features", "pool_roi_features/random", ("level order",), honest="iou"),
        Entry("rcnn_targets_without_plus_one", TWO,
              lambda: patch(ref2, "FasterRCNN", "targets = torch.where(classes >= 0, classes + 1, torch.zeros_like(classes)).long()",
                            "targets = torch.where(classes >= 0, classes, torch.zeros_like(classes)).long()"),
              "FasterRCNN", "FasterRCNN/sample_rois", ("class + 1",), honest="iou"),
        Entry("rcnn_targets_in_wrong_order", TWO,
              lambda: patch(ref2, "FasterRCNN", "roi_feats = pool_roi_features(feats, strides, image_idx, boxes, self.roi_size)\n        logits",
                            "order = torch.sort(assign_rois_to_fpn_levels(boxes), stable=True).indices\n"
                            "        roi_feats = pool_roi_features(feats, strides, image_idx[order], boxes[order], self.roi_size)\n        logits"),
              "FasterRCNN", "FasterRCNN/losses_fixed_predictions", ("loss_cls",), honest="iou"),
    ]
