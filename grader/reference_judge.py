"""Judging a student's *trained weights* in the grader's own process, with the reference.

The overfit test and the mAP gate never take a number the submission
computed.  The sandbox trains the student's detector (their classes and
functions) and returns only its ``state_dict``; here the weights are loaded
into the *reference* model of the same configuration, and the reference's
own loss (overfit test) or its own inference (mAP gate) is computed on data
the grader holds.  Student code never runs in this module.

Parameter names.  The notebook's stubs fix every module name except the six
FPN convolutions (``self.fpn_params[...]``, "names ``lateral_p3``,
``output_p3`` ... are a good choice") and the indices inside the stems'
``nn.Sequential``.  :func:`match_state_dict` therefore accepts a state dict
whose keys differ from the reference's when its *modules* can be paired
one-to-one by their parameters' shapes (ties, e.g. the three 3x3 FPN output
convs, are paired in the natural order of their names: ``..._p3`` before
``..._p4``).  A wrong pairing can only make the judged loss worse, never
better; a model whose layers differ from the notebook's (an extra
BatchNorm, a missing branch) cannot be judged and is refused with the
mismatch named.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from data_utils.data.voc import IMAGENET_MEAN, IMAGENET_STD

#: Which detector each assignment trains, and the names a checkpoint's ``model_config["detector"]`` may use for it.
DETECTOR_NAMES = {"FCOS": ("fcos", "FCOS", "one_stage"), "FasterRCNN": ("faster_rcnn", "FasterRCNN", "two_stage")}


def reference_model(kind: str, config: dict) -> nn.Module:
    """The reference detector ``kind`` ("FCOS" / "FasterRCNN") built with ``config``
    (the keys the harness's ``build_detector`` reads), random init, no download."""
    if kind == "FCOS":
        from solutions.fcos import FCOS

        return FCOS(int(config.get("num_classes", 20)), int(config["fpn_channels"]), list(config["stem_channels"]),
                    weights=None)
    if kind == "FasterRCNN":
        from solutions.backbone import DetectorBackboneWithFPN
        from solutions.faster_rcnn import FasterRCNN
        from solutions.rpn import RPN

        backbone = DetectorBackboneWithFPN(int(config["fpn_channels"]), weights=None)
        rpn = RPN(int(config["fpn_channels"]), list(config.get("rpn_stem_channels", config["stem_channels"])),
                  **dict(config.get("rpn_kwargs", {})))
        return FasterRCNN(backbone, rpn, list(config["stem_channels"]), num_classes=int(config.get("num_classes", 20)),
                          batch_size_per_image=int(config.get("batch_size_per_image", 32)))
    raise ValueError(f"unknown detector {kind!r}; expected one of {sorted(DETECTOR_NAMES)}")


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _modules(state: dict) -> dict[str, dict[str, tuple]]:
    """``{module prefix: {parameter name: shape}}`` of a state dict."""
    modules: dict[str, dict[str, tuple]] = defaultdict(dict)
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        modules[prefix][leaf] = tuple(value.shape)
    return modules


def match_state_dict(reference: dict, student: dict) -> tuple[dict, list[str]]:
    """``student`` re-keyed to ``reference``'s names: ``(state_dict, notes)``.

    Keys present in both with equal shapes are kept; the remaining modules are
    paired by the shapes of their parameters (see the module docstring).
    Raises ``ValueError`` naming the first modules that cannot be paired.
    """
    if not isinstance(student, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in student.items()):
        raise ValueError("the weights are not a state_dict (parameter name -> tensor)")
    out, notes = {}, []
    left_ref = {k: v for k, v in reference.items() if not (k in student and tuple(student[k].shape) == tuple(v.shape))}
    left_student = {k: v for k, v in student.items() if k not in reference or k in left_ref}
    out.update({k: student[k] for k in reference if k not in left_ref})
    if left_ref or left_student:
        ref_modules, student_modules = _modules(left_ref), _modules(left_student)
        by_signature: dict[tuple, list[str]] = defaultdict(list)
        for prefix, params in student_modules.items():
            by_signature[tuple(sorted(params.items()))].append(prefix)
        wanted: dict[tuple, list[str]] = defaultdict(list)
        for prefix, params in ref_modules.items():
            wanted[tuple(sorted(params.items()))].append(prefix)
        unmatched = []
        for signature, ref_prefixes in wanted.items():
            candidates = sorted(by_signature.get(signature, []), key=_natural)
            ref_prefixes = sorted(ref_prefixes, key=_natural)
            if len(candidates) != len(ref_prefixes):
                unmatched += [f"{p} ({', '.join(f'{n} {list(s)}' for n, s in signature)})" for p in ref_prefixes]
                continue
            for ref_prefix, student_prefix in zip(ref_prefixes, candidates):
                for leaf, _ in signature:
                    out[f"{ref_prefix}.{leaf}" if ref_prefix else leaf] = student[f"{student_prefix}.{leaf}" if student_prefix else leaf]
                if ref_prefix != student_prefix:
                    notes.append(f"{student_prefix} -> {ref_prefix}")
            by_signature.pop(signature, None)
        extra = sorted(p for prefixes in by_signature.values() for p in prefixes)
        if unmatched or extra:
            parts = []
            if unmatched:
                groups = list(dict.fromkeys(".".join(u.split(" ")[0].split(".")[:2]) for u in unmatched))
                parts.append(f"{len(unmatched)} of the notebook's layers have no match in yours, in "
                             + ", ".join(groups[:6]) + f"; e.g. {unmatched[0]}")
            if extra:
                parts.append("layers the notebook's model does not have: " + ", ".join(extra[:4]))
            raise ValueError("your model's layers differ from the notebook's (" + " | ".join(parts) + ")")
    return out, notes


def load_reference(kind: str, config: dict, student_state: dict) -> tuple[nn.Module, list[str]]:
    """The reference detector carrying the student's weights (eval mode), and the renaming notes."""
    torch.manual_seed(0)
    model = reference_model(kind, config)
    state, notes = match_state_dict(model.state_dict(), student_state)
    model.load_state_dict(state, strict=True)
    return model.eval(), notes


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> the networks' float input (the harness's normalisation)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


@torch.no_grad()
def reference_loss(model: nn.Module, images_uint8: torch.Tensor, gt_boxes: torch.Tensor, *,
                   normalizer: float | None = None, seed: int = 0) -> dict[str, float]:
    """The reference's training losses of ``model`` on a batch (eval mode, no update).

    FCOS's loss normalizer is set to ``normalizer`` first (the value the
    student's buffer holds is theirs, so it is never trusted); Faster R-CNN's
    random sampling of anchors and RoIs is seeded.  Returns every ``loss_*``
    value and their sum as ``"total"``.
    """
    model.eval()
    if normalizer is not None and isinstance(getattr(model, "normalizer", None), torch.Tensor):
        model.normalizer.fill_(float(normalizer))
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        losses = model(normalize(images_uint8), gt_boxes.float())
    finally:
        torch.set_rng_state(generator_state)
    out = {k: float(v) for k, v in losses.items() if k.startswith("loss")}
    out["total"] = sum(out.values())
    return out
