"""Scores come from the grader's own process, and a grader that cannot grade says so.

The end-to-end comparison of the grading paths (nbgrader, ``grader batch``,
Gradescope) is ``tests/test_notebooks_e2e.py::test_one_score_per_notebook_on_every_path``;
these are the fast pieces: the nbgrader autograde step's mapping of a report
onto grade cells, its silence about hidden-test regions, stubs of reused
code, and loud infrastructure failures on every entry point.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from assignments.autograde import GraderFailure, apply_report, assignment_of, without_hidden_tests
from grader.grade import EXIT_CANNOT_GRADE, GraderInfrastructureError, grade_source, stub_names
from grader.sandbox import Outcome
from grader.source import reference_source

ROOT = Path(__file__).resolve().parents[1]


def _grade_cell(grade_id: str, points: float, outputs=None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("check('x')")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": points, "solution": False}
    cell.outputs = outputs or []
    return cell


def _report(*checks) -> dict:
    return {"assignment": "one_stage", "submission": "sub.ipynb",
            "checks": [dict(id=f"{f}.{i}", function=f, kind=k, points=p, max_points=m, status="passed" if p == m else "failed",
                            title=f"{f} check", visible=False, message="" if p == m else "values differ: x and y swapped")
                       for i, (f, k, p, m) in enumerate(checks)], "errors": [], "score": 0, "max_score": 0}


def test_grade_cells_get_the_graders_points_not_the_kernels():
    # A cell whose kernel output claimed full marks (what a patched grade_cell would print).
    forged = [nbformat.v4.new_output("execute_result", data={"text/plain": "14"}, execution_count=1)]
    nb = nbformat.v4.new_notebook(cells=[_grade_cell("check-nms", 14, forged), _grade_cell("check-overfit", 10)])
    report = _report(("nms", "check", 3.5, 7.0), ("nms", "check", 0.0, 7.0), ("overfit", "overfit", 10.0, 10.0))
    recorded = apply_report(nb, report)
    assert recorded == {"check-nms": 3.5, "check-overfit": 10.0}
    results = [o for o in nb.cells[0].outputs if o.output_type == "execute_result"]
    assert [r.data["text/plain"] for r in results] == ["3.5"]
    text = "".join(o.text for o in nb.cells[0].outputs if o.output_type == "stream")
    assert "x and y swapped" in text and "3.5 / 14" in text


def test_nbgraders_reading_of_the_cells_gives_the_graders_points():
    from nbgrader.utils import determine_grade

    nb = nbformat.v4.new_notebook(cells=[_grade_cell("check-iou", 6)])
    apply_report(nb, _report(("iou", "check", 1.5, 6.0)))
    assert determine_grade(nb.cells[0]) == (1.5, 6.0)
    apply_report(nb, _report(("iou", "check", 0.0, 6.0)))
    assert determine_grade(nb.cells[0]) == (0.0, 6.0)


def test_a_cell_the_rubric_disagrees_with_is_an_error_not_a_grade():
    nb = nbformat.v4.new_notebook(cells=[_grade_cell("check-iou", 8)])
    with pytest.raises(GraderFailure, match="rebuild the course"):
        apply_report(nb, _report(("iou", "check", 6.0, 6.0)))
    with pytest.raises(GraderFailure, match="no check of 'nms'"):
        apply_report(nbformat.v4.new_notebook(cells=[_grade_cell("check-nms", 14)]), _report(("iou", "check", 6.0, 6.0)))


def test_the_assignment_comes_from_the_notebook_name():
    assert assignment_of({"nbgrader": {"notebook": "two_stage", "assignment": "hw4"}}) == "two_stage"
    with pytest.raises(GraderFailure, match="name the notebook after its assignment"):
        assignment_of({"nbgrader": {"notebook": "homework", "assignment": "hw4"}})


def test_hidden_regions_are_removed_the_way_nbgrader_releases_them():
    from nbgrader.preprocessors import ClearHiddenTests

    source = 'check("nms")\n### BEGIN HIDDEN TESTS\nfrom grader.notebook import grade_cell\ngrade_cell("a", "nms", globals())\n### END HIDDEN TESTS'
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "check-nms", "locked": True, "points": 1, "solution": False}
    released, _ = ClearHiddenTests().preprocess_cell(cell, {}, 0)
    assert without_hidden_tests(source) == released.source
    assert "grade_cell" not in without_hidden_tests(source)


def test_reused_stubs_are_recognised_and_working_code_is_not():
    source = '''
def nms(boxes, scores, iou_threshold=0.5):
    """doc"""
    # YOUR CODE HERE
    raise NotImplementedError()

def class_spec_nms(boxes, scores, class_ids, iou_threshold=0.5):
    return nms(boxes, scores, iou_threshold)
    raise NotImplementedError()

class DetectorBackboneWithFPN:
    def __init__(self, out_channels):
        self.out_channels = out_channels
        # YOUR CODE HERE
        raise NotImplementedError()
'''
    names = ["DetectorBackboneWithFPN", "get_fpn_location_coords", "nms", "class_spec_nms"]
    assert stub_names(source, names) == ["DetectorBackboneWithFPN", "nms"]
    assert stub_names(reference_source("two_stage"), names) == []


class _BrokenSandbox:
    mode, mode_note = "fallback", "a sandbox whose interpreter cannot import torch"

    def run(self, source, spec, **kwargs):
        return Outcome("error", error_type="ModuleNotFoundError", error="No module named 'torch'")


def test_a_sandbox_that_cannot_run_the_graders_probe_stops_grading():
    with pytest.raises(GraderInfrastructureError, match="No module named 'torch'"):
        grade_source(reference_source("one_stage"), "one_stage", functions=["nms"],
                     include_overfit=False, include_map=False, sandbox=_BrokenSandbox())


def _env_without_bwrap() -> dict:
    # The interpreter is called by its absolute path; bubblewrap cannot be found.
    return {**os.environ, "PATH": "/nonexistent", "PYTHONPATH": str(ROOT)}


def test_cli_exits_3_and_writes_nothing_when_its_sandbox_cannot_start(tmp_path):
    sub = tmp_path / "sub.py"
    sub.write_text(reference_source("one_stage"))
    out, gs = tmp_path / "report.json", tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", str(sub), "-a", "one_stage", "--sandbox", "bwrap",
                           "--json", str(out), "--gradescope", str(gs), "--no-overfit", "--no-map"],
                          cwd=ROOT, env=_env_without_bwrap(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_CANNOT_GRADE, proc.stderr
    assert "grader error" in proc.stderr and "bwrap" in proc.stderr and "No grade was recorded" in proc.stderr
    assert not out.exists() and not gs.exists()


def test_batch_stops_instead_of_recording_zeros_for_a_class(tmp_path):
    folder = tmp_path / "submitted"
    folder.mkdir()
    for student in ("alice", "bob", "carol"):
        (folder / f"{student}.py").write_text(reference_source("two_stage"))
    out = tmp_path / "grades.csv"
    proc = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "-a", "two_stage", "--sandbox", "bwrap",
                           "--out", str(out), "--no-overfit", "--no-map", "--functions", "iou"],
                          cwd=ROOT, env=_env_without_bwrap(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == EXIT_CANNOT_GRADE, proc.stderr
    assert "The batch stopped" in proc.stderr
    rows = list(csv.DictReader(out.open())) if out.exists() else []
    assert rows == []  # nobody was recorded with a zero
    assert not list((tmp_path / "grades_reports").glob("*.json"))  # so a rerun grades everyone


def test_gradescope_writes_no_zero_when_the_grader_cannot_grade(tmp_path):
    from grader.gradescope import build_bundle, install_bundle

    root = install_bundle(build_bundle("one_stage", tmp_path / "bundle.zip"), tmp_path / "autograder")
    (root / "submission").mkdir()
    (root / "submission" / "one_stage.py").write_text(reference_source("one_stage"))
    # The script's own tools are on PATH; bubblewrap is not.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "cat", "chmod", "find", "id", "mkdir", "rm"):
        (tools / tool).symlink_to(next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()))
    env = {**_env_without_bwrap(), "PATH": str(tools), "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable,
           "GRADER_EXTRA_ARGS": "--sandbox bwrap --no-overfit --no-map --functions nms"}
    proc = subprocess.run(["/bin/bash", str(root / "run_autograder")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_CANNOT_GRADE, proc.stdout + proc.stderr
    assert not (root / "results" / "results.json").exists()
    assert "no score was recorded" in proc.stderr


def test_grades_csv_of_nbgrader_export_is_ignored_by_git():
    proc = subprocess.run(["git", "check-ignore", "-q", "assignments/course/grades.csv"], cwd=ROOT)
    assert proc.returncode == 0


def test_autograde_runs_the_grader_of_this_repository_whatever_else_is_importable(tmp_path, monkeypatch):
    """A `grader` package earlier on PYTHONPATH (another checkout, an editable
    install elsewhere) must not be the one that grades this course."""
    from assignments.autograde import run_grader

    impostor = tmp_path / "elsewhere" / "grader"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text("")
    (impostor / "__main__.py").write_text(
        "import json, sys\nout = sys.argv[sys.argv.index('--json') + 1]\n"
        "json.dump({'checks': [], 'score': 999, 'max_score': 999}, open(out, 'w'))\n")
    monkeypatch.setenv("PYTHONPATH", str(impostor.parent))
    sub = tmp_path / "sub.py"
    sub.write_text(reference_source("two_stage"))
    report = run_grader(sub, "two_stage", extra_args=["--functions", "iou", "--no-overfit", "--no-map"], timeout=600)
    assert report["score"] == report["max_score"] == 6.0
    assert {c["function"] for c in report["checks"]} == {"iou"}


def test_grade_cell_text_is_escaped_like_every_other_report():
    """A student's exception text reaches the grade cell through the report module's cleaning:
    no terminal escape sequences, one line, and the points are the function's own."""
    from assignments.autograde import cell_text

    report = _report(("nms", "check", 0.0, 7.0), ("iou", "check", 6.0, 6.0))
    report["checks"][0]["message"] = "\x1b[2J\x1b[31mfake: 14 / 14 points\nsecond line"
    text = cell_text("nms", [c for c in report["checks"] if c["function"] == "nms"], report)
    assert "\x1b" not in text and "second line" not in text
    assert text.rstrip().endswith("nms: 0 / 7 points (graded by `python -m grader`, outside your notebook)")


def test_the_notebook_helpers_are_never_imported_by_the_graded_code():
    """The imports cell's ``from data_utils.course_tools import ...`` (and the bare ``course_tools`` of
    notebooks released before the helpers moved into the student package) is dropped from the extracted
    submission; the rest of the package's imports stay."""
    from grader.notebook import clean_source

    cell = "\n".join([
        "from data_utils.course_tools import check, make_submission, train",
        "import data_utils.course_tools as tools",
        "from data_utils import course_tools",
        "from course_tools import check",
        "from data_utils.training.engine import TrainConfig",
        "from data_utils.data import voc",
    ])
    kept, _ = clean_source(cell, "imports cell", notes=[], broken={})
    assert [line for line in kept.splitlines() if line.strip()] == [
        "from data_utils.training.engine import TrainConfig", "from data_utils.data import voc"], kept
