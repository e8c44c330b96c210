"""Scores that code which computes nothing must not earn (issue 11: 1b, 1d, 1e, 1f).

* oracle laundering: while F is checked, no reference answer computes F;
* degenerate code (placeholder outputs of the right shapes) and the visible cases'
  stored values score what the honest stub scores: minor checks are gated on the
  function's main value check (``[<assignment>.gates]`` in the rubric);
* hidden checks say what is wrong, never by how much;
* library functions the notebook forbids cost the function's points.

The first tests read tables and sources only (fast); the zoo tests grade in the
sandbox (marked slow).
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import torch

from grader import checks as checks_module
from grader import suites
from grader.compare import compare_tensor, hidden_feedback, redact_hidden
from grader.forbidden import FORBIDDEN, forbidden_names, forbidden_uses, rule
from grader.functions import CLASSES, STUDENT_FUNCTIONS, all_names, reference
from grader.gates import apply_gates, gate_for
from grader.harness import procedures
from grader.results import ERROR, FAILED, PASSED, SKIPPED, CheckResult
from grader.rubric import load_rubric
from grader.source import reference_source
from tests.grader_zoo import zoo_scoring as zs

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("one_stage", "two_stage")


# ---------------------------------------------------------------------------
# 1b. Oracle laundering (tables)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("assignment, function, launderers", [
    ("one_stage", "nms", {"class_spec_nms"}),
    ("two_stage", "iou", {"rcnn_match_anchors_to_gt", "nms", "class_spec_nms"}),
    ("two_stage", "assign_rois_to_fpn_levels", {"pool_roi_features"}),
])
def test_no_oracle_computes_the_function_under_check(assignment, function, launderers):
    offered = set(checks_module.oracle_names(assignment, function))
    assert not offered & launderers, f"{sorted(offered & launderers)} would answer {function} with the reference"


def test_oracles_that_do_not_compute_the_function_are_still_offered():
    assert "nms" in checks_module.oracle_names("one_stage", "class_spec_nms")
    assert "iou" in checks_module.oracle_names("two_stage", "rcnn_match_anchors_to_gt")
    assert "assign_rois_to_fpn_levels" in checks_module.oracle_names("two_stage", "pool_roi_features")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_reference_call_graph_covers_the_calls_the_reference_makes(assignment):
    """The AST-derived table against what the reference really calls on the visible cases."""
    from grader.sanity import load_fixtures

    names = [n for n in all_names(assignment) if n not in CLASSES]
    codes = {reference(n).__code__: n for n in names}
    reaches = checks_module.reference_reaches(assignment)
    ns = {n: reference(n) for n in all_names(assignment)}
    traced = nested = 0
    for case in load_fixtures(assignment)["cases"]:
        spec = case["spec"]
        if spec["op"] != "call" or spec["name"] not in names:
            continue
        called: set[str] = set()

        def profile(frame, event, arg, called=called):  # bound now: B023
            if event == "call" and frame.f_code in codes:
                called.add(codes[frame.f_code])

        sys.setprofile(profile)
        try:
            record = procedures.run_procedure(dict(ns), copy.deepcopy(spec))
        finally:
            sys.setprofile(None)
        assert record.get("ok"), record
        traced += 1
        nested += bool(called - {spec["name"]})
        missing = called - {spec["name"]} - reaches[spec["name"]]
        assert not missing, f"the reference {spec['name']} calls {sorted(missing)}: reference_reaches misses it"
    assert traced >= 5 and nested >= 1  # the trace sees calls (class_spec_nms -> nms, rcnn matching -> iou)


# ---------------------------------------------------------------------------
# 1d. Gates (tables and rule)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_function_has_a_main_check_and_every_other_check_is_gated(assignment):
    rubric = load_rubric()
    registry = suites.registry(assignment)
    assert set(rubric[assignment]["gates"]) == set(STUDENT_FUNCTIONS[assignment])
    for function in STUDENT_FUNCTIONS[assignment]:
        gate = gate_for(rubric, assignment, function)
        checks = {c.id: c for c in registry if c.function == function}
        assert set(gate.main) <= set(checks), f"{function}: unknown main checks {set(gate.main) - set(checks)}"
        for main in gate.main:
            assert not checks[main].visible and not checks[main].cuda, f"{main}: a main check must be hidden, not CUDA-only"
        for gated, needs in gate.needs.items():
            assert gated in checks and gated not in gate.main, f"{function}: `needs` names {gated}"
            assert needs and set(needs) <= set(gate.main), f"{gated} must need main checks only"
        gated = [c for c in checks if c not in gate.main]
        assert gated, f"{function}: nothing is gated"
        for check_id in checks:
            assert (check_id in gate.main) != bool(gate.required(check_id))


def _result(check_id, status, points=1.0, max_points=1.0):
    function = check_id.split("/")[0]
    return CheckResult(check_id, function, check_id, False, max_points, points if status == PASSED else 0.0, status)


def test_gated_checks_lose_their_points_when_the_main_check_fails():
    rubric = load_rubric()
    results = [_result("nms/empty", PASSED), _result("nms/random_float", FAILED), _result("nms/no_mutation", PASSED)]
    apply_gates(rubric, "one_stage", results)
    assert [r.points for r in results] == [0.0, 0.0, 0.0]
    assert results[0].status == FAILED and "nms/random_float" in results[0].message


@pytest.mark.parametrize("main_status, max_points", [(PASSED, 1.0), (SKIPPED, 0.0), (ERROR, 0.0)])
def test_gated_checks_keep_their_points_when_the_main_check_passes_or_is_not_the_students_fault(main_status, max_points):
    rubric = load_rubric()
    results = [_result("nms/empty", PASSED), _result("nms/random_float", main_status, max_points=max_points)]
    apply_gates(rubric, "one_stage", results)
    assert results[0].points == 1.0 and results[0].status == PASSED


def test_needs_names_only_the_main_checks_a_gated_check_depends_on():
    rubric = load_rubric()
    results = [_result("FCOS/losses_all_padding", PASSED), _result("FCOS/losses_fixed_predictions", PASSED),
               _result("FCOS/inference_fixed_predictions", FAILED), _result("FCOS/sanity_losses", PASSED)]
    apply_gates(rubric, "one_stage", results)
    assert results[0].points == 1.0 and results[3].points == 1.0  # the losses do not depend on inference


# ---------------------------------------------------------------------------
# 1e. Hidden messages (rule)
# ---------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\d+e[-+]?\d+|\.\d+)(?![\w.])", re.I)


def test_hidden_comparisons_do_not_quantify_the_difference():
    out, ref = torch.tensor([0.5, 1.0]), torch.tensor([1.2536, 1.0])
    visible = compare_tensor(out, ref)
    assert "rel error" in visible.message
    with hidden_feedback():
        hidden = compare_tensor(out, ref)
        shape = compare_tensor(torch.zeros(3), torch.zeros(5))
    assert not hidden.passed and "rel error" not in hidden.message and not NUMBER.search(hidden.message)
    assert "5" not in shape.message and "dimension 0" in shape.message


@pytest.mark.parametrize("message, leaked", [
    ("loss_cls differs from the expected value (rel error 4.3e-01): focal loss", "4.3e-01"),
    ("output: values differ from the expected ones (rel error 1.0e-02); hint", "1.0e-02"),
    ("image 0: (12, 4) proposals, expected (100, 4) ok", "100"),
    ("12 RoIs sampled, expected 16 (with a huge batch)", "16"),
])
def test_redaction_removes_numbers_derived_from_the_reference(message, leaked):
    assert leaked not in redact_hidden(message)


# ---------------------------------------------------------------------------
# 1f. Forbidden library functions (tables and static reading)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_rule_is_stated_in_the_notebook(assignment):
    text = " ".join((ROOT / "assignments" / "src" / f"{assignment}.md").read_text().lower().split())
    for function in FORBIDDEN[assignment]:
        assert rule(assignment, function).lower() in text, f"the {assignment} notebook does not say: {rule(assignment, function)}"
        assert function in STUDENT_FUNCTIONS[assignment]


STATIC = {
    "assignment": "import torchvision\nnms = torchvision.ops.nms\n",
    "from_import": "from torchvision.ops import nms\n",
    "import_alias": "from torchvision.ops import nms as tv\ndef nms(b, s, t=0.5):\n    return tv(b, s, t)\n",
    "module_alias": "import torchvision.ops as O\nB = O.boxes\ndef nms(b, s, t=0.5):\n    return B.batched_nms(b, s, s.long() * 0, t)\n",
    "body": "import torchvision\ndef nms(b, s, t=0.5):\n    return torchvision.ops.nms(b, s, t)\n",
    "local_import": "def nms(b, s, t=0.5):\n    from torchvision.ops import boxes\n    return boxes.nms(b, s, t)\n",
    "helper": "import torch\ndef _h(b, s, t):\n    return torch.ops.torchvision.nms(b, s, t)\ndef nms(b, s, t=0.5):\n    return _h(b, s, t)\n",
    "getattr": "import torchvision\ndef nms(b, s, t=0.5):\n    return getattr(torchvision.ops, 'nms')(b, s, t)\n",
    "importlib": "import importlib\ndef nms(b, s, t=0.5):\n    return importlib.import_module('torchvision.ops').nms(b, s, t)\n",
    "default_argument": "import torchvision\ndef nms(b, s, t=0.5, f=torchvision.ops.nms):\n    return f(b, s, t)\n",
}


@pytest.mark.parametrize("name", sorted(STATIC))
def test_static_reading_finds_forbidden_uses(name):
    assert forbidden_uses(STATIC[name], "one_stage", "nms"), name


@pytest.mark.parametrize("source", [
    "import torchvision\ndef nms(b, s, t=0.5):\n    return b[:0]\nprint(torchvision.ops.nms)\n",  # comparing at top level
    "from torchvision.ops import nms\ndef nms(b, s, t=0.5):\n    return b[:0]\n",  # the own definition wins
    "import torchvision\ndef nms(b, s, t=0.5):\n    '''unlike torchvision.ops.nms'''\n    return b[:0]\n",
])
def test_static_reading_allows_what_the_rule_does_not_forbid(source):
    assert forbidden_uses(source, "one_stage", "nms") == []


def test_answered_functions_are_not_read_into_the_checked_one():
    source = "import torchvision\nnms = torchvision.ops.nms\ndef class_spec_nms(b, s, c, t=0.5):\n    return nms(b, s, t)\n"
    assert forbidden_uses(source, "one_stage", "class_spec_nms", answered=["nms"]) == []
    assert forbidden_uses(source, "one_stage", "class_spec_nms") == ["torchvision.ops.nms"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_reference_uses_nothing_forbidden(assignment):
    source = reference_source(assignment)
    for function in FORBIDDEN[assignment]:
        assert forbidden_uses(source, assignment, function, checks_module.oracle_names(assignment, function)) == []
        assert forbidden_names(assignment, function)


# ---------------------------------------------------------------------------
# The zoo, graded in the sandbox
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    from grader.sandbox import Sandbox
    from tests.test_grader_zoo import FAST

    with Sandbox(limits=FAST["limits"]["check"]) as sb:
        yield sb


def grade(source, assignment, functions, sandbox):
    from grader.grade import grade_source
    from tests.test_grader_zoo import FAST

    return grade_source(source, assignment, functions=functions, include_overfit=False, include_map=False,
                        sandbox=sandbox, rubric=FAST)


def points(report, function):
    return round(sum(c.points for c in report.checks if c.function == function), 4)


def max_points(report, function):
    return round(sum(c.max_points for c in report.checks if c.function == function), 4)


@pytest.mark.slow
@pytest.mark.parametrize("case", zs.laundering_cases() + zs.forbidden_cases(), ids=lambda c: c.name)
def test_scoring_zoo_earns_what_the_stub_earns(case, sandbox):
    functions = [case.target] + case.honest
    report = grade(case.source, case.assignment, functions, sandbox)
    stub = grade(zs.stub_source(case.assignment), case.assignment, [case.target], sandbox)
    assert points(report, case.target) <= points(stub, case.target), \
        [(c.id, c.status, c.points, c.message[:120]) for c in report.checks if c.function == case.target]
    for honest in case.honest:
        assert points(report, honest) == max_points(report, honest), \
            [(c.id, c.status, c.message[:160]) for c in report.checks if c.function == honest]
    if case.words:
        text = " ".join(c.message for c in report.checks if c.function == case.target).lower()
        assert any(w in text for w in case.words), text[:1000]


@pytest.mark.slow
@pytest.mark.parametrize("assignment, functions", [
    ("one_stage", ["nms", "class_spec_nms"]),
    ("two_stage", ["iou", "assign_rois_to_fpn_levels", "pool_roi_features"]),
])
def test_the_reference_keeps_full_marks_on_the_zoos_functions(assignment, functions, sandbox):
    report = grade(reference_source(assignment), assignment, functions, sandbox)
    assert report.score == report.max_score, [(c.id, c.status, c.message[:160]) for c in report.checks if not c.passed]


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
@pytest.mark.parametrize("kind", ["degenerate", "stored_values"])
def test_code_that_computes_nothing_scores_what_the_stub_scores(kind, assignment, sandbox):
    source = zs.degenerate_source(assignment) if kind == "degenerate" else zs.stored_values_source(assignment)
    functions = sorted({f for f in STUDENT_FUNCTIONS[assignment]}
                       & (set(zs.DEGENERATE[assignment]) | {o.split(".")[0] for o in zs.DEGENERATE[assignment]}))
    report = grade(source, assignment, functions, sandbox)
    stub = grade(zs.stub_source(assignment), assignment, functions, sandbox)
    earned = [(c.id, c.points) for c in report.checks if c.points > 0]
    assert report.score <= stub.score + 0.5, earned


@pytest.mark.slow
def test_hidden_messages_do_not_say_by_how_much(sandbox):
    report = grade(zs.slightly_wrong_loss_source(), "one_stage", ["FCOS"], sandbox)
    failed = [c for c in report.checks if not c.passed and c.status != SKIPPED]
    assert any(c.id == "FCOS/losses_fixed_predictions" for c in failed), [(c.id, c.status) for c in report.checks]
    for c in report.checks:
        if not c.visible:
            assert "rel" not in c.message.lower() and not NUMBER.search(c.message), f"{c.id}: {c.message}"


@pytest.mark.slow
def test_hidden_messages_do_not_reveal_how_many_boxes_the_reference_keeps(sandbox):
    report = grade(zs.short_nms_source(), "one_stage", ["nms"], sandbox)
    main = next(c for c in report.checks if c.id == "nms/random_float")
    assert not main.passed
    for c in report.checks:
        if not c.visible and not c.passed:
            assert "expected (" not in c.message and not re.search(r"expected \d", c.message), f"{c.id}: {c.message}"
