"""The visible (notebook) checks of the detectors compare real values.

FCOS, the RPN and Faster R-CNN are checked on a fixed tiny input whose
backbone / head outputs (or proposals and classifier weights) are given, so
their losses have exact expected values from the reference, stored in the
fixtures.  A relative error is printed only where a value was compared;
shape-only checks say "shapes match".
"""

from __future__ import annotations

import inspect

import pytest
import torch

import solutions.fcos as fcos_module
from grader.functions import STUDENT_FUNCTIONS, reference
from grader.sanity import run_sanity, sanity_cases


def _reference_namespace(assignment: str) -> dict:
    return {name: reference(name) for a in STUDENT_FUNCTIONS for name in STUDENT_FUNCTIONS[a]}


def _fcos_variant(old: str, new: str) -> dict:
    """The reference namespace with FCOS's source edited (a plausible student bug)."""
    source = inspect.getsource(fcos_module.FCOS)
    assert source.count(old) == 1, old
    module_ns = dict(vars(fcos_module))
    exec(compile(source.replace(old, new), "<fcos variant>", "exec"), module_ns)
    return _reference_namespace("one_stage") | {"FCOS": module_ns["FCOS"]}


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.parametrize("assignment,name", [("one_stage", "FCOS"), ("two_stage", "RPN"), ("two_stage", "FasterRCNN")])
def test_detectors_have_a_value_check_that_the_reference_passes(assignment, name, capsys):
    kinds = {c.id: c.compare["kind"] for c in sanity_cases(assignment) if c.function == name}
    assert "losses" in kinds.values(), kinds
    results = run_sanity(assignment, name, _reference_namespace(assignment))
    assert results and all(r.passed for r in results), [r.message for r in results]
    for line, case_id in zip(_lines(capsys), kinds):
        if kinds[case_id] == "losses":
            assert "rel error" in line, line
        else:  # compares no value: no relative error
            assert "rel error" not in line, line


@pytest.mark.parametrize("assignment", ["one_stage", "two_stage"])
def test_shape_only_checks_say_shapes_match(assignment, capsys):
    shape_functions = sorted({c.function for c in sanity_cases(assignment) if c.compare["kind"] == "shapes"})
    assert shape_functions
    for name in shape_functions:
        assert all(r.passed for r in run_sanity(assignment, name, _reference_namespace(assignment)))
        for line in _lines(capsys):
            if "shapes" in line.lower() and "[pass]" in line:
                assert "shapes match" in line and "rel error" not in line, line


def test_box_loss_over_all_locations_fails_the_visible_fcos_check(capsys):
    """Not zeroing the L1 term at background locations passed the old finite-only check."""
    ns = _fcos_variant("            loss_box = torch.where(foreground[..., None], loss_box, torch.zeros_like(loss_box))\n", "")
    results = {r.id: r for r in run_sanity("one_stage", "FCOS", ns)}
    fixed = results["FCOS/sanity_fixed_losses"]
    assert not fixed.passed
    assert "loss_box" in fixed.message and "matched locations only" in fixed.message
    assert results["FCOS/sanity_losses"].passed  # the finite-only check alone would not have seen it


def test_a_loss_hard_coding_the_voc_classes_fails_visibly_with_a_pointed_message():
    ns = _fcos_variant("F.one_hot(matched[..., 4].long().clamp(min=0), self.num_classes)",
                       "F.one_hot(matched[..., 4].long().clamp(min=0) + 1, 21)[..., 1:]")
    fixed = {r.id: r for r in run_sanity("one_stage", "FCOS", ns, verbose=False)}["FCOS/sanity_fixed_losses"]
    assert not fixed.passed
    assert "num_classes=5" in fixed.message and "self.num_classes" in fixed.message, fixed.message


def test_a_normalizer_that_is_not_a_running_average_is_named():
    ns = _fcos_variant("self.normalizer.mul_(NORMALIZER_MOMENTUM).add_((1 - NORMALIZER_MOMENTUM) * num_pos)",
                       "pass")
    fixed = {r.id: r for r in run_sanity("one_stage", "FCOS", ns, verbose=False)}["FCOS/sanity_fixed_losses"]
    assert not fixed.passed and "normalizer" in fixed.message, fixed.message


def test_rpn_box_loss_on_all_sampled_anchors_fails_the_visible_rpn_check():
    import solutions.rpn as rpn_module

    source = inspect.getsource(rpn_module.RPN)
    lines = [line for line in source.splitlines() if "l1_loss" in line]
    assert lines, "the reference RPN computes its box loss with l1_loss"
    results = run_sanity("two_stage", "RPN", _reference_namespace("two_stage"), verbose=False)
    assert all(r.passed for r in results)
    # Scaling the box loss (a wrong normaliser) must show in the values.
    module_ns = dict(vars(rpn_module))
    exec(compile(source.replace(lines[0].strip(), lines[0].strip() + " * 2", 1), "<rpn variant>", "exec"), module_ns)
    bad = {r.id: r for r in run_sanity("two_stage", "RPN", _reference_namespace("two_stage") | {"RPN": module_ns["RPN"]},
                                       verbose=False)}
    assert not bad["RPN/sanity_fixed_losses"].passed
    assert "loss_rpn_box" in bad["RPN/sanity_fixed_losses"].message


def test_fixed_loss_fixtures_hold_only_the_compared_losses():
    from grader.sanity import load_fixtures

    for assignment in ("one_stage", "two_stage"):
        for case in load_fixtures(assignment)["cases"]:
            if case["compare"]["kind"] == "losses":
                for step in case["expected"]["outputs"]:
                    assert sorted(step) == sorted(case["compare"]["keys"])
                    assert all(isinstance(v, torch.Tensor) and torch.isfinite(v) for v in step.values())


@pytest.mark.parametrize("assignment", ["one_stage", "two_stage"])
def test_grader_keeps_its_visible_checks_and_their_weights(assignment):
    """The fixed-loss cases are notebook-only (a hidden check grades the same
    computation): the grader's visible checks, and so every score, are unchanged,
    and each of them still has a rubric weight."""
    from grader.rubric import load_rubric, weight_for
    from grader.suites import registry

    visible = {c.id for c in registry(assignment) if c.visible}
    cases = sanity_cases(assignment)
    assert visible == {c.id for c in cases if c.graded}
    assert {c.id for c in cases if not c.graded} == {c.id for c in cases if c.compare["kind"] == "losses"}
    rubric = load_rubric()
    assert all(weight_for(rubric, assignment, check_id) > 0 for check_id in visible)
