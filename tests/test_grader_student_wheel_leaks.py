"""The student wheel holds no graded answer in any form (issue 11, item 5).

The harness used to carry a complete RegNet+FPN (``given_backbone_class``)
inside ``grader/_child.py`` (now the ``grader/harness/`` package), which students get; the line-by-line leak check
missed it.  The given backbone now lives in ``grader/_given.py`` (instructor
only) and the leak check refuses definitions named like graded answers and
reference definitions with names and literals changed.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from assignments.student_package import STUDENT_GRADER_MODULES, build_wheel, definition_problems, wheel_problems

ROOT = Path(__file__).resolve().parents[1]


def test_the_old_harness_would_be_refused():
    old = subprocess.run(["git", "show", "412bc20:grader/_child.py"], cwd=ROOT, capture_output=True, text=True)
    if old.returncode != 0:
        pytest.skip("the history before the fix is not available")
    assert any("DetectorBackboneWithFPN" in p for p in definition_problems(old.stdout))


def test_a_renamed_reference_definition_is_refused():
    text = (ROOT / "solutions" / "non_max_suppression.py").read_text()
    disguised = text.replace("def nms(", "def _helper_x(").replace("iou_threshold", "t").replace("class_spec_nms", "_other")
    problems = definition_problems(disguised)
    assert any("'_helper_x'" in p and "names and literals changed" in p for p in problems), problems
    # Small generic definitions are not compared (they would match anything).
    assert definition_problems("def f(x):\n    return x\n") == []


def test_graded_names_are_refused_at_any_depth():
    text = "def factory():\n    class FCOS:\n        pass\n    return FCOS\n"
    assert any("'FCOS'" in p for p in definition_problems(text))


def test_the_wheel_has_no_given_backbone(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        harness = [archive.read(n).decode() for n in names if n.startswith("grader/harness/")]
    assert "grader/_given.py" not in names and "_given" not in STUDENT_GRADER_MODULES
    assert harness and not any("class DetectorBackboneWithFPN" in text for text in harness)
    assert wheel_problems(wheel) == []


def test_an_answer_staged_for_the_backend_is_caught_in_the_built_wheel(tmp_path, monkeypatch):
    """setuptools packs what is staged; the leak check reads what it packed (the dist-info included)."""
    from assignments import student_package

    files = student_package._package_files()
    planted = ("data_utils/helpers_extra.py", b"def nms(boxes, scores, iou_threshold):\n    return boxes\n")
    monkeypatch.setattr(student_package, "_package_files", lambda: sorted([*files, planted]))
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(planted[0]) == planted[1]
    assert any(p.startswith(f"{planted[0]}: defines 'nms'") for p in wheel_problems(wheel)), wheel_problems(wheel)


@pytest.mark.slow
def test_the_sandbox_still_supplies_the_given_backbone():
    from grader.sandbox import Sandbox

    spec = {"op": "module", "name": "DetectorBackboneWithFPN", "ctor_args": [16], "ctor_kwargs": {"weights": None},
            "calls": [{"args": [{"__randn__": [1, 3, 64, 64], "seed": 0}], "no_grad": True}]}
    with Sandbox() as sandbox:
        outcome = sandbox.run("import torch\n", spec, given_classes=["DetectorBackboneWithFPN"])
    assert outcome.ok, outcome.describe()
    features = outcome.value["outputs"][0]
    assert {k: tuple(v.shape) for k, v in features.items()} == {"p3": (1, 16, 8, 8), "p4": (1, 16, 4, 4), "p5": (1, 16, 2, 2)}
