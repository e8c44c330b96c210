"""Judges shared by the visible checks (:mod:`grader.sanity`, also in the student's
notebook) and the hidden ones (:mod:`grader.checks_one_stage`,
:mod:`grader.checks_two_stage`): each takes an output and what was expected and
returns a :class:`~grader.compare.Verdict` whose message names the likely mistake.

Depends only on :mod:`torch` and :mod:`grader.compare`: it ships in the student
package with the sanity checks (``assignments/student_package.py``).
"""

from __future__ import annotations

import torch

from grader.compare import Verdict

__all__ = ["shape_tree", "shape_verdict", "greedy_nms", "diagnose_nms", "judge_indices", "judge_samples"]


def shape_tree(obj):
    """The shapes of ``obj``'s tensors in its structure: a tensor becomes its shape tuple, dicts and
    lists (tuples too) keep their layout, anything else becomes None."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, dict):
        return {k: shape_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [shape_tree(v) for v in obj]
    return None


def shape_verdict(out, expected, what: str) -> Verdict:
    """``out`` has the structure and shapes of ``expected`` (a :func:`shape_tree`) and only finite
    floating-point values; the message names the first offending item, starting at ``what``."""
    if isinstance(expected, tuple):
        if not isinstance(out, torch.Tensor):
            return Verdict(False, f"{what}: expected a tensor of shape {expected}, got {type(out).__name__}")
        if tuple(out.shape) != expected:
            return Verdict(False, f"{what}: shape {tuple(out.shape)}, expected {expected}")
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            return Verdict(False, f"{what}: contains NaN or inf")
        return Verdict(True)
    if isinstance(expected, dict):
        if not isinstance(out, dict):
            return Verdict(False, f"{what}: expected a dict with keys {sorted(expected)}, got {type(out).__name__}")
        for key, sub in expected.items():
            if key not in out:
                return Verdict(False, f"{what}: missing key {key!r}")
            verdict = shape_verdict(out[key], sub, f"{what}[{key!r}]")
            if not verdict.passed:
                return verdict
        return Verdict(True)
    if isinstance(expected, list):
        if not isinstance(out, (list, tuple)) or len(out) != len(expected):
            return Verdict(False, f"{what}: expected {len(expected)} items")
        for i, (o, e) in enumerate(zip(out, expected)):
            verdict = shape_verdict(o, e, f"{what}[{i}]")
            if not verdict.passed:
                return verdict
        return Verdict(True)
    return Verdict(True)


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, *, far_corner=torch.minimum,
                near_corner=torch.maximum, keep_le: bool = False) -> list[int]:
    """Greedy NMS with one piece of the IoU swapped, in float64 (to recognise a mistake)."""
    boxes = boxes.double()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    keep = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        top_left = near_corner(boxes[rest, :2], boxes[i, :2])
        bottom_right = far_corner(boxes[rest, 2:], boxes[i, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(-1)
        overlap = inter / (area[rest] + area[i] - inter)
        order = rest[overlap <= threshold] if keep_le else rest[~(overlap > threshold)]
    return keep


def diagnose_nms(out, boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> str | None:
    """Name a wrong intersection when the kept boxes are exactly those it gives."""
    if not isinstance(out, torch.Tensor) or not isinstance(boxes, torch.Tensor) or boxes.dim() != 2:
        return None
    kept = out.reshape(-1).tolist()
    corner = ("the intersection looks wrong: it is the box from (max x1, max y1) to (min x2, min y2) of the two boxes, "
              "clamped at 0 width and height")
    if kept == greedy_nms(boxes, scores, threshold, far_corner=torch.maximum):
        return corner + "; you seem to take the max for the bottom-right corner"
    if kept == greedy_nms(boxes, scores, threshold, near_corner=torch.minimum):
        return corner + "; you seem to take the min for the top-left corner"
    return None


def judge_indices(out, ref: torch.Tensor) -> Verdict:
    """Kept indices of NMS: same boxes, by decreasing score, int64."""
    if not isinstance(out, torch.Tensor):
        return Verdict(False, f"expected a tensor of kept indices, got {type(out).__name__}")
    if out.dtype != torch.int64:
        return Verdict(False, f"kept indices must be int64 (torch.long), got {out.dtype}")
    out = out.reshape(-1)
    if torch.equal(out, ref):
        return Verdict(True)
    if set(out.tolist()) == set(ref.tolist()) and len(out) == len(ref):
        return Verdict(False, "the right boxes are kept but not in order of decreasing score")
    if len(out) > len(ref):
        return Verdict(False, f"kept {len(out)} boxes, expected {len(ref)}: too few suppressed "
                              "(suppress a box when its IoU with a kept, higher-scoring box is > threshold)")
    return Verdict(False, f"kept {len(out)} boxes, expected {len(ref)} (different boxes kept)")


def judge_samples(out, ref, matched) -> Verdict:
    """Foreground/background samples: counts, validity, no duplicates."""
    if not isinstance(out, (list, tuple)) or len(out) != 2:
        return Verdict(False, "expected a tuple (fg_idx, bg_idx)")
    fg, bg = out
    for name, idx in (("fg_idx", fg), ("bg_idx", bg)):
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64:
            return Verdict(False, f"{name} must be an int64 tensor of indices")
    fg_ref, bg_ref = ref
    if len(fg) != len(fg_ref) or len(bg) != len(bg_ref):
        return Verdict(False, f"sampled {len(fg)} foreground and {len(bg)} background anchors, "
                              f"expected {len(fg_ref)} and {len(bg_ref)}")
    if len(set(fg.tolist())) != len(fg) or len(set(bg.tolist())) != len(bg) or set(fg.tolist()) & set(bg.tolist()):
        return Verdict(False, "an anchor was drawn twice")
    if matched is not None:
        classes = matched[..., 4].reshape(-1)
        if len(fg) and (fg.min() < 0 or fg.max() >= len(classes)) or len(bg) and (bg.min() < 0 or bg.max() >= len(classes)):
            return Verdict(False, "indices out of range")
        if len(fg) and not bool((classes[fg] >= 0).all()):
            return Verdict(False, "fg_idx contains anchors that are not foreground")
        if len(bg) and not bool((classes[bg] == -1).all()):
            bad = classes[bg]
            if bool((bad == -1e8).any()):
                return Verdict(False, "bg_idx contains neutral anchors (-1e8 rows must never be sampled)")
            return Verdict(False, "bg_idx contains anchors that are not background")
    return Verdict(True)
