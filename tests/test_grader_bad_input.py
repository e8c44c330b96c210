"""Bad input never crashes the grader, and a student's top-level code is kept or refused
with a message (issue 11, "bad input"; "a symlink is graded as the file it points to").

Each case gets a report with a clear message and a score: 0 for what cannot be
read, full points for the honest functions next to it.
"""

from __future__ import annotations

import copy
import json
import os
import zipfile

import nbformat
import pytest

from grader.grade import grade_source
from grader.notebook import SubmissionError, extract_submission, grade_path
from grader.rubric import load_rubric
from grader.source import reference_source
from tests.grader_zoo.zoo import notebook_from_source, write_notebook

FAST = copy.deepcopy(load_rubric())
FAST["limits"]["check"].update(wall_seconds=15.0, load_seconds=15.0, cpu_seconds=60.0)

#: ``1+1+...+1``: ast.parse raises RecursionError on it.
HUGE_EXPRESSION = "HUGE = " + "+".join(["1"] * 20000) + "\n"


def zero_report(path):
    return grade_path(path, "one_stage", functions=["nms"], include_overfit=False, include_map=False, rubric=FAST)


# ---------------------------------------------------------------------------
# Unreadable files: score 0 with the reason, no sandbox started
# ---------------------------------------------------------------------------


def test_json_nested_50000_deep_is_a_clear_zero(tmp_path):
    path = tmp_path / "one_stage.ipynb"
    path.write_text('{"cells": ' + "[" * 50000 + "]" * 50000 + "}")
    report = zero_report(path)
    assert report.score == 0 and report.max_score > 0
    assert any("nested too deeply" in e for e in report.errors), report.errors


def test_symlinked_notebook_is_refused(tmp_path):
    secret = tmp_path / "instructor" / "one_stage.ipynb"
    secret.parent.mkdir()
    write_notebook(secret.parent, notebook_from_source(reference_source("one_stage"), "one_stage"), "one_stage.ipynb")
    submission = tmp_path / "submitted" / "bob"
    submission.mkdir(parents=True)
    os.symlink(os.path.relpath(secret, submission), submission / "one_stage.ipynb")
    for path in (submission, submission / "one_stage.ipynb"):
        with pytest.raises(SubmissionError, match="symbolic link"):
            extract_submission(path, "one_stage")
        report = zero_report(path)
        assert report.score == 0 and any("symbolic link" in e for e in report.errors)
    # A link to a folder, anywhere below the submission, is refused too.
    os.unlink(submission / "one_stage.ipynb")
    (submission / "one_stage.py").write_text("x = 1\n")
    os.symlink(secret.parent, submission / "more")
    with pytest.raises(SubmissionError, match="symbolic link"):
        extract_submission(submission, "one_stage")


def test_a_fifo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "one_stage.ipynb")
    with pytest.raises(SubmissionError, match="not a regular file"):
        extract_submission(tmp_path / "one_stage.ipynb", "one_stage")


# ---------------------------------------------------------------------------
# Odd cells: noted, the rest graded
# ---------------------------------------------------------------------------


def odd_notebook(tmp_path):
    """The reference notebook plus a 20,000-term expression, a string as ``metadata.nbgrader``
    and a number as a cell's source (written as raw JSON: nbformat would refuse to write it)."""
    nb = notebook_from_source(reference_source("one_stage"), "one_stage")
    nb.cells.insert(1, nbformat.v4.new_code_cell(HUGE_EXPRESSION))
    nb.cells[1].metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": "huge",
                                        "schema_version": 3}
    data = json.loads(nbformat.writes(nb))
    data["cells"].insert(2, {"cell_type": "code", "execution_count": None, "outputs": [],
                             "metadata": {"nbgrader": "solution"}, "source": "def helper():\n    return 1\n"})
    data["cells"].insert(3, {"cell_type": "code", "execution_count": None, "outputs": [], "metadata": {}, "source": 12345})
    path = tmp_path / "one_stage.ipynb"
    path.write_text(json.dumps(data))
    return path


def test_odd_cells_are_noted_and_the_rest_extracted(tmp_path):
    sub = extract_submission(odd_notebook(tmp_path), "one_stage")
    notes = "\n".join(sub.notes)
    assert "cell 2" in notes and "too deeply nested" in notes, notes
    assert "cell 3: its nbgrader metadata is not an object" in notes
    assert "cell 4: its source is not text (int)" in notes
    assert "not a valid Jupyter notebook" in notes  # nbformat's validation
    assert {"nms", "FCOS", "helper"} <= sub.defined and "HUGE" not in sub.defined
    compile(sub.source, "<x>", "exec")


@pytest.mark.slow
def test_odd_notebook_and_huge_source_are_graded(tmp_path):
    report = grade_path(odd_notebook(tmp_path), "one_stage", functions=["nms"], include_overfit=False, include_map=False,
                        rubric=FAST)
    assert report.score == report.max_score > 0, [(c.id, c.message) for c in report.checks if not c.passed]
    # The same expression in a module's source (no extraction): a load error with a score, not a crash.
    report = grade_source(HUGE_EXPRESSION + reference_source("one_stage"), "one_stage", functions=["nms"],
                          include_overfit=False, include_map=False, rubric=FAST)
    assert report.max_score > 0 and report.score == 0 and report.errors, report.errors


# ---------------------------------------------------------------------------
# Top-level code of the student's: kept in solution cells, refused with a message elsewhere
# ---------------------------------------------------------------------------

TABLE_NMS = '''
def nms(boxes, scores, iou_threshold=0.5):
    """The reference's nms, through module-level state the student computed."""
    assert _TABLE["ready"] and _SCALE == 1.0 and _helper() == 1
    return _reference_nms(boxes, scores, iou_threshold)
'''


def table_notebook(tmp_path, own_cell: bool):
    source = reference_source("one_stage")
    source = source.replace("def nms(", "def _reference_nms(", 1) + TABLE_NMS
    nb = notebook_from_source(source, "one_stage")
    code = ("import math\n_TABLE = {}\nfor key in ['ready']:\n    _TABLE[key] = True\n"
            "_SCALE = math.sqrt(1.0)\nif True:\n    def _helper():\n        return 1\n")
    cell = nbformat.v4.new_code_cell(code)
    if not own_cell:
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": "table",
                                     "schema_version": 3}
    nb.cells.insert(1, cell)
    return write_notebook(tmp_path, nb, "one_stage.ipynb")


def test_top_level_code_of_a_solution_cell_is_kept(tmp_path):
    sub = extract_submission(table_notebook(tmp_path, own_cell=False), "one_stage")
    assert "_TABLE[key] = True" in sub.source and "_SCALE = math.sqrt(1.0)" in sub.source
    assert "_helper" in sub.defined
    # The demo cell at the end (a model built, a loop of 10**9) still does not run.
    assert "range(10**9)" not in sub.source and "FCOS(20, 64" not in sub.source


def test_top_level_code_of_an_own_cell_is_refused_with_a_message(tmp_path):
    sub = extract_submission(table_notebook(tmp_path, own_cell=True), "one_stage")
    notes = "\n".join(sub.notes)
    assert "_TABLE[key] = True" not in sub.source
    assert "sets _TABLE" in notes and "sets _SCALE" in notes and "does not run at grading time" in notes, notes
    assert "_helper" in sub.defined  # a definition inside an `if` is a definition


@pytest.mark.slow
def test_a_loop_filling_a_table_in_a_solution_cell_scores(tmp_path):
    report = grade_path(table_notebook(tmp_path, own_cell=False), "one_stage", functions=["nms"], include_overfit=False,
                        include_map=False, rubric=FAST)
    assert report.score == report.max_score > 0, [(c.id, c.message) for c in report.checks if not c.passed]


# ---------------------------------------------------------------------------
# Batches: one unreadable entry does not stop the others
# ---------------------------------------------------------------------------


def test_zip_with_a_symlink_member_is_refused(tmp_path):
    from grader.batch import _unzip

    archive = tmp_path / "bob.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("one_stage.ipynb")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "../../../source/one_stage/one_stage.ipynb")
    with pytest.raises(ValueError, match="symbolic link"):
        _unzip(archive, tmp_path / "out")
