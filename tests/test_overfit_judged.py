"""The overfit test is judged in the grader's process from the trained weights
(issue 11), and a function that fails its own checks is replaced by the
reference there (issue 13).

Each sandboxed run takes 5-60 s on the shared 2-core machine (40 iterations
at 128 px with a frozen trunk), hence ``slow``; the unit tests of the
weight matching are fast.
"""

from __future__ import annotations

import pytest
import torch

from grader.grade import grade_source
from grader.reference_judge import match_state_dict, reference_model
from grader.source import reference_source

CONSTANT_LOSS_FCOS = '''
class FCOS(torch.nn.Module):
    """No backbone, head or targets: a loss that is a constant."""
    def __init__(self, num_classes, fpn_channels, stem_channels, weights=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("normalizer", torch.tensor(150.0))
    def forward(self, images, gt_boxes):
        return {"loss_cls": self.w * 0 + 0.1}
'''

#: Finds the harness's procedure table from inside the submission (the garbage collector sees every
#: module's globals; the harness runs in the same process as the student's code, so nothing in it is
#: out of reach) -- then the two patches below.
_FIND_HARNESS = '''
import gc as _gc
_m = next((d for d in _gc.get_objects() if isinstance(d, dict) and isinstance(d.get("PROCEDURES"), dict)
           and "overfit" in d["PROCEDURES"]), None)
'''

#: Replacing the harness's overfit procedure inside the child with a perfect curve.
PATCHED_PROCEDURE = _FIND_HARNESS + '''
if _m is not None:
    _m["PROCEDURES"]["overfit"] = lambda ns, spec, devices: {"history": {"total": [0.0] * 40}, "seconds": 1.0}
'''

#: The same patch, returning the weights of an untrained model of the right architecture.
PATCHED_UNTRAINED = _FIND_HARNESS + '''
if _m is not None:
    _m["PROCEDURES"]["overfit"] = lambda ns, spec, devices: {"history": {"total": [0.0] * 40},
        "state_dict": _m["to_plain"](dict(_m["build_detector"](ns, spec).state_dict()))}
'''


def _overfit(source: str, assignment: str = "one_stage", functions=()):
    report = grade_source(source, assignment, functions=list(functions), include_map=False)
    return next(c for c in report.checks if c.kind == "overfit"), report


def test_fpn_names_are_matched_by_shape_and_other_architectures_refused():
    model = reference_model("FCOS", {"num_classes": 20, "fpn_channels": 16, "stem_channels": [16]})
    reference = model.state_dict()
    renamed = {k.replace("lateral_p", "inner").replace("output_p", "layer"): v for k, v in reference.items()}
    state, notes = match_state_dict(reference, renamed)
    assert set(state) == set(reference) and all(torch.equal(state[k], reference[k]) for k in reference)
    assert any("inner3 -> backbone.fpn_params.lateral_p3" in n for n in notes)
    extra = {**reference, "pred_net.extra_bn.weight": torch.ones(16)}
    with pytest.raises(ValueError, match="does not have: pred_net.extra_bn"):
        match_state_dict(reference, extra)
    with pytest.raises(ValueError, match="have no match"):
        match_state_dict(reference, {"w": torch.zeros(())})


@pytest.mark.slow
def test_reference_passes_and_cheats_get_nothing():
    reference = reference_source("one_stage")
    result, _ = _overfit(reference)
    assert result.status == "passed" and result.points == result.max_points, result.message
    assert "reference loss of your trained model" in result.message
    for cheat, expected in ((CONSTANT_LOSS_FCOS, "cannot be judged"), (PATCHED_PROCEDURE, "no trained weights"),
                            (PATCHED_UNTRAINED, "did not learn")):
        result, _ = _overfit(reference + cheat)
        assert result.points == 0 and result.status == "failed" and expected in result.message, result.message


@pytest.mark.slow
def test_a_stub_costs_its_own_points_not_the_overfit():
    source = reference_source("one_stage").replace(
        "def fcos_make_centerness_targets(", "def fcos_make_centerness_targets(*a, **k):\n    raise NotImplementedError\n\n"
        "def _unused_centerness(", 1)
    result, report = _overfit(source, functions=["fcos_make_centerness_targets"])
    own = [c for c in report.checks if c.function == "fcos_make_centerness_targets"]
    assert own and all(c.points == 0 for c in own)
    assert result.points == result.max_points, result.message
    assert "reference stood in for fcos_make_centerness_targets" in result.message
