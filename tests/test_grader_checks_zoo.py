"""Issue 13: the grader on the code real students of the course write.

Each entry of :func:`tests.grader_zoo.zoo_checks.checks_submissions` is graded in
the sandbox: a bug must fail its check with a message naming the mistake and cost
no more than its share (``min_points``); correct course-style code keeps every
point.  The unit tests below pin the diagnoses' simulations to the reference.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from tests.grader_zoo.zoo_checks import checks_submissions
from tests.test_grader_zoo import FAST, check_entry, grade_entry, sandbox  # noqa: F401 - the sandbox fixture


@pytest.mark.slow
@pytest.mark.parametrize("entry", checks_submissions(), ids=lambda e: e.name)
def test_checks_zoo(entry, sandbox, tmp_path):  # noqa: F811  (pytest passes the imported fixture by name)
    report = grade_entry(entry, tmp_path, sandbox)
    check_entry(entry, report)
    if entry.expect:
        entry.expect(report)
    if entry.target:
        points = sum(c.points for c in report.checks if c.function == entry.target)
        if entry.min_points is not None:
            assert points >= entry.min_points, (entry.name, points, [(c.id, c.points, c.message) for c in report.checks if not c.passed])
        if entry.max_points is not None:
            assert points <= entry.max_points, (entry.name, points)


def test_nms_diagnosis_simulation_isgreedy_nms():
    """The grader's simulated NMS (for diagnoses) equals the reference and torchvision when nothing is swapped."""
    from grader.checks import gen, rand_boxes
    from grader.judges import greedy_nms
    from solutions import nms

    g = gen(3)
    boxes, scores = rand_boxes(g, 300, max_frac=0.3), torch.rand(300, generator=g)
    assert greedy_nms(boxes, scores, 0.5) == nms(boxes, scores, 0.5).tolist() == torchvision.ops.nms(boxes, scores, 0.5).tolist()
    points = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(points, scores, 0.5).tolist() == torchvision.ops.nms(points, scores, 0.5).tolist() == [0, 1, 2]


def test_match_variant_simulation_is_the_reference_without_variants():
    from data_utils.conventions import FPN_STRIDES
    from grader.checks import gen, level_shapes, rand_gt
    from grader.checks_one_stage import _course_variant_match, _locations
    from solutions import fcos_match_locations_to_gt

    locations = _locations(level_shapes(2, 8, 224, 224))
    gt = rand_gt(gen(5), 2, [6, 3], 8)
    expected = fcos_match_locations_to_gt(locations, FPN_STRIDES, gt)
    got = _course_variant_match(locations, FPN_STRIDES, gt)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_load_error_message_names_layers():
    from grader.checks_one_stage import load_error_message

    error = ("Error(s) in loading state_dict for Head:\n\tsize mismatch for stem_cls.0.weight: copying a param with shape "
             "torch.Size([16, 16, 3, 3]) from checkpoint, the shape in current model is torch.Size([16, 16, 1, 1]).")
    assert "stem_cls.0.weight has shape [16, 16, 1, 1], expected [16, 16, 3, 3]" in load_error_message(error, "layout")
