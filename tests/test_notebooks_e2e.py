"""The nbgrader course end to end, on a throw-away copy of ``assignments/course``.

One run of :func:`assignments.selftest.selftest` per test session (both
assignments): ``nbgrader generate_assignment``; ``nbgrader validate`` on the
source notebook and ``--invert`` on the release; three submissions (the
release completed with the reference, the untouched release, the reference
with one planted bug) autograded with ``nbgrader autograde``; ``nbgrader
generate_feedback``.  The source notebooks run top to bottom on the CPU twice
(validate and the reference's autograde) with the small training settings
nbgrader selects (it sets ``NBGRADER_EXECUTION``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest

from assignments.extract import all_reference_body_lines
from assignments.selftest import PLANTED_BUGS, STUDENTS, course_of, expected_problems, selftest
from assignments.spec import ASSIGNMENTS
from assignments.student_package import _significant, wheel_problems

pytestmark = pytest.mark.slow

#: One planted bug per assignment (autograding no longer executes notebooks, so each costs one grader run).
BUGS = list(ASSIGNMENTS)


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("course")
    started = time.perf_counter()
    reports = selftest(list(ASSIGNMENTS), workdir, log=lambda line: None, bugs=BUGS, parallel=True, paths=True)
    seconds = time.perf_counter() - started
    print(f"\nnbgrader round trip of both assignments: {seconds:.0f} s; "
          + "; ".join(f"{k}: {r.seconds}" for k, r in reports.items()))
    return workdir, reports


def _course(round_trip, name: str) -> Path:
    return course_of(round_trip[0], name, parallel=True)


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_round_trip_gives_full_and_zero_marks(round_trip, name):
    report = round_trip[1][name]
    assert expected_problems(report) == []
    spec = ASSIGNMENTS[name]
    assert report.max_score == spec.max_score == spec.total_points + spec.overfit["points"]
    assert report.scores[STUDENTS["reference"]] == spec.max_score
    assert report.scores[STUDENTS["release"]] == 0


@pytest.mark.parametrize("name", BUGS)
def test_a_planted_bug_loses_exactly_that_functions_points(round_trip, name):
    report = round_trip[1][name]
    spec = ASSIGNMENTS[name]
    bug = PLANTED_BUGS[name]
    assert report.scores[STUDENTS["bug"]] == spec.max_score - spec.points[bug.function]
    cell_points = dict(spec.points, overfit=spec.overfit["points"])
    lost = {cell: score for cell, score in report.cell_scores[STUDENTS["bug"]].items()
            if cell.startswith("check-") and score < cell_points[cell.removeprefix("check-")]}
    assert lost == {f"check-{bug.function}": 0}


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_source_notebook_runs_top_to_bottom_with_the_reference(round_trip, name):
    """The source notebook (the reference, hidden tests included) executed in
    full with the small settings: no cell may raise."""
    course, reports = _course(round_trip, name), round_trip[1]
    assert reports[name].errors_in_reference == []
    executed = nbformat.read(course / "executed" / f"{name}.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code[:-1])
    pictures = sum(1 for c in code for o in c.outputs if "image/png" in o.get("data", {}))
    assert pictures >= 8, f"only {pictures} figures were drawn"


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_release_holds_no_reference_line_no_hidden_test_and_no_solutions_import(round_trip, name):
    course = _course(round_trip, name)
    release = course / "release" / name
    source_nb = nbformat.read(course / "source" / name / f"{name}.ipynb", as_version=4)
    # Lines students may legitimately see: everything of the source outside
    # solution regions and hidden test regions.
    allowed = set()
    hidden = set()
    for cell in source_nb.cells:
        text = re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "", cell.source, flags=re.S)
        for region in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", text, flags=re.S):
            hidden |= {line.strip() for line in region.splitlines() if line.strip()}
        text = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", text, flags=re.S)
        allowed |= {line.strip() for line in text.splitlines()}
    reference = {line for lines in all_reference_body_lines().values() for line in lines if _significant(line)}
    assert len(reference) > 200  # the search is not vacuous

    nb = nbformat.read(release / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    lines = {line.strip() for cell in nb.cells for line in cell.source.splitlines()}
    assert not (lines & reference) - allowed, sorted((lines & reference) - allowed)[:5]
    assert not lines & hidden
    text = "\n".join(cell.source for cell in nb.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "grade_cell", "grader.notebook"):
        assert marker not in text
    assert not re.search(r"^\s*(from|import)\s+solutions\b", text, flags=re.M)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    stubs = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert all("raise NotImplementedError()" in c.source for c in stubs)
    assert len(stubs) == len(ASSIGNMENTS[name].functions) + len(ASSIGNMENTS[name].reused)

    files = sorted(p.name for p in release.iterdir())
    wheel = [f for f in files if f.endswith(".whl")]
    assert wheel and wheel_problems(release / wheel[0]) == []
    for path in release.iterdir():
        if path.suffix == ".py":
            body = path.read_text()
            assert not re.search(r"^\s*(from|import)\s+solutions\b", body, flags=re.M)
            assert not ({line.strip() for line in body.splitlines()} & reference)
    assert set(files) <= {f"{name}.ipynb", "one_stage_sanity.pt", "two_stage_sanity.pt", wheel[0]}


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_one_score_per_notebook_on_every_path(round_trip, name):
    """nbgrader's gradebook, `grader batch` and the Gradescope bundle give every
    submission the same points per function (and overfit test); the
    kernel-patching notebook scores what the untouched release scores; reused
    code left as stubs costs nothing in the assignment that does not grade it."""
    report = round_trip[1][name]
    assert set(report.path_points) == {"nbgrader", "batch", "gradescope"}
    students = set(report.path_points["nbgrader"])
    assert {STUDENTS["reference"], STUDENTS["release"], STUDENTS["bug"], STUDENTS["patcher"]} <= students
    assert set(report.path_points["batch"]) == students
    assert set(report.path_points["gradescope"]) == students - {STUDENTS["reference"]}
    from assignments.selftest import path_problems

    assert path_problems(report) == []
    for path, by_student in report.path_points.items():
        for student, points in by_student.items():
            assert points == report.path_points["nbgrader"][student], (path, student)
            assert round(sum(points.values()), 2) == report.scores[student], (path, student)
    assert report.scores[STUDENTS["patcher"]] == report.scores[STUDENTS["release"]] == 0
    if ASSIGNMENTS[name].reused:
        assert report.scores[STUDENTS["cross"]] == ASSIGNMENTS[name].max_score


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_feedback_shows_scores_but_no_hidden_test(round_trip, name):
    course, reports = _course(round_trip, name), round_trip[1]
    assert reports[name].feedback_leaks == []
    html = (course / "feedback" / STUDENTS["release"] / name / f"{name}.html").read_text()
    assert "Score:" in html or "score" in html.lower()
    assert "hidden tests were run here" in html


def test_release_notebooks_open_in_jupyterlab_4(round_trip):
    """Serve the release with JupyterLab 4 and load both notebooks through its
    contents API: the server validates them (a broken notebook comes back
    with a 'message') and the lab page itself is served."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "course-test"
    exe = Path(sys.executable).with_name("jupyter-lab")
    server = subprocess.Popen(
        [str(exe), "--no-browser", "--allow-root", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={round_trip[0]}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "JUPYTER_NO_CONFIG": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("jupyter lab did not start") from None
                time.sleep(0.5)
        lab = urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10).read().decode()
        assert "JupyterLab" in lab or "jupyter-config-data" in lab
        for name in ASSIGNMENTS:
            path = f"{name}/course/release/{name}/{name}.ipynb"
            with urllib.request.urlopen(f"{base}/api/contents/{path}?token={token}", timeout=30) as r:
                model = json.load(r)
            assert model["type"] == "notebook" and model["format"] == "json"
            assert not model.get("message"), model.get("message")
            stubs = [c for c in model["content"]["cells"] if c["metadata"].get("nbgrader", {}).get("solution")]
            checks = [c for c in model["content"]["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
            # one grade cell per function, plus the overfit test's
            assert len(stubs) >= len(ASSIGNMENTS[name].functions) and len(checks) == len(ASSIGNMENTS[name].functions) + 1
    finally:
        server.terminate()
        server.wait(timeout=30)
