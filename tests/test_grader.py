"""The grader: interface, rubric, visible sanity fixtures, extraction, reports,
sandbox protocol, and the entry points (CLI, nbgrader's grade cells, the
Gradescope bundle, batch) on the reference-completed and release submissions.

The zoos of bad submissions and plausible bugs are in tests/test_grader_zoo.py.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

from grader.compare import check_not_mutated, rel_error, tree_close
from grader.functions import CLASSES, DEPENDENCIES, REFERENCE_MODULES, STUDENT_FUNCTIONS
from grader.harness import wire
from grader.notebook import SubmissionError, extract_submission
from grader.report import csv_text, gradescope_results, markdown_feedback
from grader.results import CheckResult, GradeReport
from grader.rubric import load_rubric
from grader.sanity import FIXTURE_DIR, export_sanity_fixtures, load_fixtures, run_sanity
from grader.source import SOLUTIONS, reference_source, release_source
from grader.submission_text import relabel_lines
from grader.suites import registry
from tests.grader_zoo.zoo import notebook_from_source, patch, write_notebook

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("one_stage", "two_stage")
COURSE_NOTEBOOK = ROOT / "assignments/course/source/{a}/{a}.ipynb"


# ---------------------------------------------------------------------------
# Interface and rubric
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_student_function_has_a_reference_with_a_solution_region(assignment):
    import ast

    for name in STUDENT_FUNCTIONS[assignment] + DEPENDENCIES[assignment]:
        module = REFERENCE_MODULES[name]
        text = (SOLUTIONS / (module.split(".")[1] + ".py")).read_text()
        tree = ast.parse(text)
        node = next((n for n in tree.body if getattr(n, "name", None) == name), None)
        assert node is not None, f"{name} not in {module}"
        assert "### BEGIN SOLUTION" in ast.get_source_segment(text, node), f"{name} has no solution region"
        assert (name in CLASSES) == isinstance(node, ast.ClassDef)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_rubric_has_a_weight_for_every_check_and_nothing_else(assignment):
    rubric = load_rubric()
    ids = [c.id for c in registry(assignment)]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(rubric[assignment]["weights"]), set(ids) ^ set(rubric[assignment]["weights"])
    assert all(w > 0 for w in rubric[assignment]["weights"].values())
    assert set(rubric[assignment]["functions"]) == set(STUDENT_FUNCTIONS[assignment])
    assert sum(rubric[assignment]["functions"].values()) == 100
    for function in STUDENT_FUNCTIONS[assignment]:
        checks = [c for c in registry(assignment) if c.function == function]
        assert any(c.visible for c in checks) and any(not c.visible for c in checks), function
    gate = rubric[assignment]["map"]
    assert 0 < gate["reference_map"] - gate["margin"] < gate["reference_map"]
    assert rubric[assignment]["overfit"]["threshold"] < rubric[assignment]["overfit"]["partial_threshold"]


# ---------------------------------------------------------------------------
# Visible sanity checks and their fixtures
# ---------------------------------------------------------------------------


def _case(data, case_id):
    return next(c for c in data["cases"] if c["id"] == case_id)


def test_sanity_fixtures_hold_the_course_values(tmp_path):
    """The values the original course printed (with the transposition bug fixed)."""
    one = load_fixtures("one_stage", export_sanity_fixtures("one_stage", tmp_path / "one.pt"))
    first = _case(one, "get_fpn_location_coords/sanity_first_five")["expected"]["output"]
    assert first["p3"][:5].tolist() == [[4, 4], [12, 4], [20, 4], [28, 4], [36, 4]]
    assert first["p4"][:5].tolist() == [[8, 8], [24, 8], [40, 8], [56, 8], [72, 8]]
    assert first["p5"][:5].tolist() == [[16, 16], [48, 16], [80, 16], [112, 16], [144, 16]]
    centerness = _case(one, "fcos_make_centerness_targets/sanity")["expected"]["output"]
    torch.testing.assert_close(centerness, torch.tensor([0.30860671401, 0.1666666716, -1.0]))
    boxes = _case(one, "fcos_apply_deltas_to_locations/sanity_round_trip")["expected"]["output"]
    torch.testing.assert_close(boxes, torch.tensor([[10.0, 15, 100, 115], [30, 20, 40, 30], [120, 100, 200, 200]]))
    shapes = _case(one, "DetectorBackboneWithFPN/sanity_shapes")["expected"]
    assert shapes == [{"p3": (2, 64, 28, 28), "p4": (2, 64, 14, 14), "p5": (2, 64, 7, 7)}]
    two = load_fixtures("two_stage", export_sanity_fixtures("two_stage", tmp_path / "two.pt"))
    torch.testing.assert_close(_case(two, "iou/sanity")["expected"]["output"],
                               torch.tensor([[1.0, 0.0625, 0.25], [0.0625, 0.0, 0.052631579], [0.0625, 1.0, 0.052631579]]))
    torch.testing.assert_close(_case(two, "generate_fpn_anchors/sanity_ratio_1")["expected"]["output"]["p5"][0], torch.tensor([-16.0, -16, 48, 48]))
    torch.testing.assert_close(_case(two, "generate_fpn_anchors/sanity_ratio_0.5")["expected"]["output"]["p5"][0],
                               torch.tensor([-29.2548, -6.6274, 61.2548, 38.6274]), atol=1e-4, rtol=0)
    torch.testing.assert_close(_case(two, "rcnn_get_deltas_from_anchors/sanity")["expected"]["output"],
                               torch.tensor([[0.0833, 0, 0.4055, 0.6931], [0.1250, -0.1250, -1.3863, -1.3863], [0, 0, 0, 0]]),
                               atol=1e-4, rtol=0)
    rpn = _case(two, "RPNPredictionNetwork/sanity_shapes")["expected"]
    assert [v[1] for v in rpn[0][0].values()] == [2352, 588, 147]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_committed_sanity_fixtures_are_up_to_date(assignment, tmp_path):
    fresh = load_fixtures(assignment, export_sanity_fixtures(assignment, tmp_path / "fresh.pt"))
    committed = load_fixtures(assignment, FIXTURE_DIR / f"{assignment}_sanity.pt")
    assert [c["id"] for c in committed["cases"]] == [c["id"] for c in fresh["cases"]], \
        "run `python -m grader export-sanity ASSIGNMENT` and commit grader/fixtures/"
    for a, b in zip(committed["cases"], fresh["cases"]):
        # tree_close: CPUs may differ in the last bit of a log or exp.
        assert tree_close(a["expected"], b["expected"]) and tree_close(a["spec"], b["spec"]), a["id"]


def test_run_sanity_passes_the_reference_and_explains_a_transposition(capsys):
    import solutions
    from solutions.fcos_targets import fcos_make_centerness_targets

    assert all(r.passed for r in run_sanity("one_stage", "get_fpn_location_coords", solutions.get_fpn_location_coords))
    assert all(r.passed for r in run_sanity("one_stage", "fcos_make_centerness_targets", fcos_make_centerness_targets))
    assert "looks good" in capsys.readouterr().out

    def transposed(shapes, strides, dtype=torch.float32, device="cpu"):
        out = solutions.get_fpn_location_coords(shapes, strides, dtype, device)
        return {k: v.view(int(shapes[k][-2]), int(shapes[k][-1]), 2).transpose(0, 1).reshape(-1, 2) for k, v in out.items()}

    results = run_sanity("one_stage", "get_fpn_location_coords", transposed)
    assert not results[0].passed and "transposed" in results[0].message


def test_run_sanity_needs_neither_solutions_nor_the_sandbox(tmp_path):
    """What a student's notebook does: no `solutions` importable at all."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "solutions":
                    raise ImportError("no solutions here")
        sys.meta_path.insert(0, Block())
        import torch
        from grader.sanity import run_sanity
        def iou(a, b):
            lt = torch.maximum(a[:, None, :2], b[None, :, :2]); rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
            inter = (rb - lt).clamp(min=0).prod(-1)
            area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
            return inter / (area(a)[:, None] + area(b)[None, :] - inter)
        results = run_sanity("two_stage", "iou", iou)
        assert results and all(r.passed for r in results), results
        assert "solutions" not in sys.modules
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------


def test_extract_from_nbgrader_solution_cells_keeps_definitions_only(tmp_path):
    nb = notebook_from_source(reference_source("one_stage"), "one_stage")
    nb.cells.insert(1, nbformat.v4.new_code_cell("!pip install something\nprint('hello')\nfrom solutions import nms"))
    sub = extract_submission(write_notebook(tmp_path, nb), "one_stage")
    assert set(STUDENT_FUNCTIONS["one_stage"]) <= sub.defined
    assert "for i in range(10**9)" not in sub.source and "print('hello')" not in sub.source
    assert "grade_cell" not in sub.source and "from solutions" not in sub.source
    assert any("not allowed" in n for n in sub.notes)
    compile(sub.source, "<x>", "exec")


def test_extract_without_metadata_and_with_a_broken_cell(tmp_path):
    source = reference_source("two_stage")
    nb = notebook_from_source(source, "two_stage", metadata=False)
    for cell in nb.cells:
        if cell.source.startswith("def iou("):
            cell.source = cell.source.replace("def iou(", "def iou(((", 1)
    sub = extract_submission(write_notebook(tmp_path, nb), "two_stage")
    assert "iou" not in sub.defined and "iou" in sub.broken and "generate_fpn_anchors" in sub.defined
    assert any("syntax error" in n for n in sub.notes) and any("no nbgrader" in n for n in sub.notes)
    assert relabel_lines("line 3", sub.source).startswith("cell")


@pytest.mark.parametrize("content, words", [
    (b'{"cells": [', "not a valid notebook"),
    ('{"metadata": {}, "cells": [{"cell_type": "code", "source": "x = \'\xe9\'"}]}'.encode("latin-1"), "utf-8"),
    (b'["not", "a", "notebook"]', "not a jupyter notebook"),
])
def test_unreadable_notebooks_give_clear_errors(tmp_path, content, words):
    path = tmp_path / "sub.ipynb"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match="(?i)" + words):
        extract_submission(path, "one_stage")


def test_a_folder_submission_and_a_py_module(tmp_path):
    (tmp_path / "one_stage.py").write_text(reference_source("one_stage"))
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "x.ipynb").write_text("{}")
    sub = extract_submission(tmp_path, "one_stage")
    assert sub.path.endswith("one_stage.py") and "nms" in sub.defined
    with pytest.raises(SubmissionError, match="does not exist"):
        extract_submission(tmp_path / "missing", "one_stage")


# ---------------------------------------------------------------------------
# Comparisons, reports, sandbox protocol
# ---------------------------------------------------------------------------


def test_comparison_helpers():
    assert rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert rel_error(torch.tensor([1.0]), torch.tensor([3.0])) == pytest.approx(0.5)
    # The course's definition, max over max: a small entry off by 1e-3 next to a large one is a small
    # error (the elementwise form said 0.333 here, while the notebooks printed 5e-06).
    assert rel_error(torch.tensor([1e-3, 100.0]), torch.tensor([2e-3, 100.0])) == pytest.approx(1e-3 / 200)
    assert rel_error([float("nan"), 1.0], [float("nan"), 1.0]) == 0.0
    assert rel_error([float("inf"), 1.0], [float("inf"), 1.0]) == 0.0
    assert rel_error([float("nan"), 1.0], [0.0, 1.0]) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(torch.zeros(2), torch.zeros(3))
    # The notebooks' rel_error is this one: one comparison, one number.
    from data_utils.course_tools import rel_error as notebook_rel_error

    for x, y in [([1e-3, 100.0], [2e-3, 100.0]), ([float("nan"), 1.0], [0.0, 1.0]), ([[1.0, -2.0]], [[1.5, -2.0]])]:
        assert notebook_rel_error(x, y) == rel_error(x, y)
    verdict = check_not_mutated({"args": [torch.ones(2)]}, {"args": [torch.zeros(2)]}, ["deltas"])
    assert not verdict.passed and "deltas" in verdict.message


def _report():
    checks = [
        CheckResult("nms/sanity_05", "nms", "visible case", True, 2.0, 2.0, "passed"),
        CheckResult("nms/ties", "nms", "hidden case", False, 3.0, 0.0, "failed", message="kept several identical boxes",
                    detail="SECRET HIDDEN INPUT tensor([[10., 10., 60., 60.]])", output=""),
        CheckResult("nms/cuda", "nms", "cuda", False, 0.0, 0.0, "skipped", message="skipped: no CUDA"),
        CheckResult("overfit/FCOS", "overfit", "overfit", True, 10.0, 5.0, "failed", message="loss went from 4.9 to 4.0", kind="overfit"),
    ]
    return GradeReport("one_stage", "sub.ipynb", checks=checks, notes=["a note"], errors=[])


def test_reports_never_show_hidden_details():
    report = _report()
    markdown = markdown_feedback(report)
    results = gradescope_results(report)
    for text in (markdown, json.dumps(results)):
        assert "SECRET" not in text and "kept several identical boxes" in text
    assert results["score"] == 7.0 and {t["name"] for t in results["tests"]} == {"nms", "overfit"}
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed") and test["score"] <= test["max_score"]
    assert "SECRET" in json.dumps(report.to_dict())  # staff JSON keeps everything
    rows = list(csv.DictReader(io.StringIO(csv_text([{"student": "a", "score": 7, "nms": 2}], "one_stage"))))
    assert rows[0]["student"] == "a" and rows[0]["nms"] == "2"


def test_results_are_decoded_without_unpickling_objects():
    """A forged result (a pickle that runs code) is rejected, not executed."""
    from grader.sandbox import Sandbox

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/grader-pwned",))

    payload = pickle.dumps({"ok": True, "value": Evil()})
    outcome = Sandbox.__new__(Sandbox)._outcome({"type": "done", "has_result": True}, payload)
    assert outcome.status == "bad_result" and not os.path.exists("/tmp/grader-pwned")
    with pytest.raises(wire.BadReturn):
        wire.to_plain(object())


# ---------------------------------------------------------------------------
# Entry points: reference-completed -> full marks, release -> zero
# ---------------------------------------------------------------------------


def _release_notebook(nb):
    from nbgrader.preprocessors import ClearSolutions

    nb = copy.deepcopy(nb)
    nb, _ = ClearSolutions(enforce_metadata=False).preprocess(nb, {})
    return nb


def _reference_notebook(assignment):
    path = Path(str(COURSE_NOTEBOOK).format(a=assignment))
    if path.exists():
        return nbformat.read(path, as_version=4)
    return notebook_from_source(reference_source(assignment), assignment)


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_cli_reference_notebook_full_marks_and_release_zero(assignment, tmp_path):
    reference = write_notebook(tmp_path, _reference_notebook(assignment), f"{assignment}.ipynb")
    out = _cli("grade", reference, "--assignment", assignment, "--json", tmp_path / "r.json",
               "--gradescope", tmp_path / "gs.json", "--feedback", tmp_path / "fb.md")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    failed = [(c["id"], c["message"]) for c in report["checks"] if c["status"] not in ("passed", "skipped")]
    assert not failed, failed
    assert report["score"] == report["max_score"] == 110.0  # 100 for the functions + 10 for the overfit test
    assert json.loads((tmp_path / "gs.json").read_text())["score"] == 110.0
    assert "TOTAL 110.00 / 110.00" in out.stdout and (tmp_path / "fb.md").read_text().startswith("# Feedback")
    skipped = {c["id"]: c["message"] for c in report["checks"] if c["status"] == "skipped"}
    assert any(k.startswith("map/") for k in skipped) and all("skipped:" in m for m in skipped.values())

    release = tmp_path / "release"
    release.mkdir()
    write_notebook(release, _release_notebook(_reference_notebook(assignment)), f"{assignment}.ipynb")
    out = _cli("grade", release, "--assignment", assignment, "--json", tmp_path / "rel.json", "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "rel.json").read_text())["score"] == 0


@pytest.mark.slow
def test_nbgrader_grade_cells_in_a_kernel(tmp_path):
    """The notebooks' graded cells: grade_cell raises on failure; with points= it returns partial credit."""
    from nbclient import NotebookClient

    ref = reference_source("one_stage")
    broken = patch(ref, "fcos_apply_deltas_to_locations", "deltas.clamp(min=0)", "deltas.clamp_(min=0)")
    cells = [nbformat.v4.new_code_cell(broken)]
    for name, points in (("get_fpn_location_coords", None), ("fcos_apply_deltas_to_locations", None),
                         ("fcos_apply_deltas_to_locations", 6), ("fcos_make_centerness_targets", 6)):
        extra = "" if points is None else f", points={points}"
        cells.append(nbformat.v4.new_code_cell(f'from grader.notebook import grade_cell\ngrade_cell("one_stage", "{name}", globals(){extra})'))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [c.outputs for c in nb.cells[1:]]
    errors = [[o for o in out if o.output_type == "error"] for out in outputs]
    assert not errors[0], errors[0]  # correct function: no error, full credit
    assert errors[1] and errors[1][0].ename == "AssertionError" and "in place" in "".join(errors[1][0].traceback)
    results = [[o for o in out if o.output_type == "execute_result"] for out in outputs]
    partial = float(results[2][0].data["text/plain"])
    assert 0 < partial < 6, partial  # the mutation check failed, the others passed
    assert float(results[3][0].data["text/plain"]) == 6
    assert not any(o.output_type == "stream" and o.name == "stderr" for out in outputs for o in out)


@pytest.mark.slow
def test_gradescope_bundle_reference_full_marks_release_zero(tmp_path):
    from grader.gradescope import build_bundle, install_bundle

    bundle = build_bundle("two_stage", tmp_path / "bundle.zip")
    # The overfit test's own entry-point coverage is the CLI test above; leave it out here to save two minutes.
    env = {**os.environ, "GRADER_PYTHON": sys.executable, "GRADER_EXTRA_ARGS": "--no-overfit"}
    for kind, nb in (("reference", _reference_notebook("two_stage")), ("release", _release_notebook(_reference_notebook("two_stage")))):
        root = install_bundle(bundle, tmp_path / kind)
        (root / "submission").mkdir()
        write_notebook(root / "submission", nb, "two_stage.ipynb")
        proc = subprocess.run([str(root / "run_autograder")], env={**env, "AUTOGRADER_ROOT": str(root)}, capture_output=True,
                              text=True, timeout=900)
        results = json.loads((root / "results" / "results.json").read_text())
        assert results["tests"], proc.stderr
        expected = 100.0 if kind == "reference" else 0.0
        assert results["score"] == expected, (kind, results["output"], [t for t in results["tests"] if t["status"] == "failed"])
        assert sum(t["score"] for t in results["tests"]) == pytest.approx(expected)


@pytest.mark.slow
def test_batch_grades_in_parallel_resumes_and_survives_bad_submissions(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "alice.py").write_text(reference_source("two_stage"))
    (folder / "bob.py").write_text(release_source("two_stage"))
    (folder / "carol.ipynb").write_text('{"cells": [')
    out = tmp_path / "grades.csv"
    args = ["batch", folder, "--assignment", "two_stage", "--jobs", "2", "--out", out, "--no-overfit", "--functions", "iou,assign_rois_to_fpn_levels"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    rows = {r["student"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"alice", "bob", "carol"}
    assert float(rows["alice"]["score"]) == float(rows["alice"]["max_score"]) == 10.0
    assert float(rows["bob"]["score"]) == 0.0
    assert float(rows["carol"]["score"]) == 0.0 and "notebook" in rows["carol"]["error"]
    reports = tmp_path / "grades_reports"
    stamps = {p.name: p.stat().st_mtime_ns for p in reports.glob("*.json")}
    proc = _cli(*args)
    assert "0 to grade" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in reports.glob("*.json")} == stamps


# ---------------------------------------------------------------------------
# The mAP gate (plumbing, on the embedded dataset's val split)
# ---------------------------------------------------------------------------


# The mAP gate's tests: tests/test_map_gate.py.
