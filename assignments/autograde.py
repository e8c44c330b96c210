"""nbgrader autograde that never lets the student's kernel decide a score.

nbgrader's stock autograde executes the submitted notebook in a kernel and
reads each grade cell's output: whatever the student's code patched in that
kernel (``grader.notebook.grade_cell``, the visible ``check``, ``sys.exit``)
decides the points.  Here the ``Execute`` step is replaced by
:class:`GradeWithGrader`, which

1. writes the sanitised notebook (nbgrader has already restored every locked
   cell from the gradebook) to a temporary folder, with the submission's
   trained weights if there are any;
2. runs ``python -m grader grade`` on it **in a separate process** -- the
   same command as the CLI, ``grader batch`` and the Gradescope bundle, so a
   notebook gets the same per-function points on every path; the student's
   code only ever runs inside that grader's sandbox;
3. writes into each grade cell its function's checks (titles and diagnoses,
   never hidden inputs) and the points earned as the cell's result, which
   nbgrader's ``SaveAutoGrades`` records as partial credit.

A grade cell ``check-NAME`` receives the points of function ``NAME``;
``check-overfit`` those of the overfit test.  If the grader itself fails
(the sandbox cannot start, torch is missing in it, the grader crashed), the
preprocessor raises :class:`GraderFailure`: nbgrader then reports the
submission as failed and records no grade, instead of zeros for a class.

The grader that runs is the one of the repository holding this file (and
the course folder): ``PYTHONPATH`` points at it and the working directory is
its root, whatever an editable install elsewhere in the environment says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor, OverwriteCells
from traitlets import Bool, Float, List, Unicode

from assignments.spec import ASSIGNMENTS
from grader.markers import BEGIN_HIDDEN_WORDS, END_HIDDEN_WORDS
from grader.report import cell_summary
from grader.results import CheckResult, GradeReport

ROOT = Path(__file__).resolve().parents[1]
#: Grade cell ids: ``check-<function>`` (and ``check-overfit``).
GRADE_ID = re.compile(r"^check-(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


def without_hidden_tests(source: str) -> str:
    """``source`` as nbgrader's ``ClearHiddenTests`` releases it (line-based, delimiters included)."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if BEGIN_HIDDEN_WORDS in line:
            hidden = True
        elif END_HIDDEN_WORDS in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


class GraderFailure(RuntimeError):
    """The grader could not grade a submission (an infrastructure problem, not the student's)."""


def grader_env() -> dict[str, str]:
    """The environment of the grading subprocess: this repository's packages first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("NBGRADER_EXECUTION", None)  # the grader is not a notebook being executed
    return env


def run_grader(submission: Path, assignment: str, *, extra_args: list[str] | None = None,
               timeout: float = 3600.0, python: str | None = None) -> dict:
    """``python -m grader grade SUBMISSION --assignment A --json ...`` in a separate process; the JSON report.

    Raises :class:`GraderFailure` (with the grader's last output) when the
    grader exits non-zero, times out, or writes no report.
    """
    with tempfile.TemporaryDirectory(prefix="grader-report-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [python or sys.executable, "-m", "grader", "grade", str(submission), "--assignment", assignment,
               "--json", str(out), "--quiet", *(extra_args or [])]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=grader_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GraderFailure(f"the grader took more than {timeout:g} s on {submission}; "
                                "raise GradeWithGrader.timeout in nbgrader_config.py") from None
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise GraderFailure(f"the grader failed on {submission} (exit {proc.returncode}); no grade recorded:\n{tail}")
        return json.loads(out.read_text())


def assignment_of(resources: dict) -> str:
    """The course assignment a notebook belongs to (its notebook name, else the nbgrader assignment id)."""
    info = resources.get("nbgrader", {})
    for candidate in (info.get("notebook"), info.get("assignment")):
        if candidate in ASSIGNMENTS:
            return candidate
    raise GraderFailure(f"notebook {info.get('notebook')!r} of assignment {info.get('assignment')!r} is not one of "
                        f"this course's assignments {sorted(ASSIGNMENTS)}; name the notebook after its assignment")


def function_results(report: dict, name: str) -> tuple[float, float, list[dict]]:
    """(earned, available, checks) of one function (or ``overfit``) in a grader JSON report."""
    checks = [c for c in report.get("checks", []) if c.get("function") == name
              or (name == "overfit" and c.get("kind") == "overfit")]
    return sum(c["points"] for c in checks), sum(c["max_points"] for c in checks), checks


def cell_text(name: str, checks: list[dict], report: dict) -> str:
    """What a grade cell shows: :func:`grader.report.cell_summary` of the function's checks."""
    return cell_summary(GradeReport.from_dict(report), name, checks=[CheckResult.from_dict(c) for c in checks],
                        footer=" (graded by `python -m grader`, outside your notebook)", max_errors=3) + "\n"


def apply_report(nb: nbformat.NotebookNode, report: dict) -> dict[str, float]:
    """Write each grade cell's checks and points into its outputs; returns {grade_id: points}.

    Raises :class:`GraderFailure` when a grade cell names nothing the grader
    graded, or when the rubric and the notebook disagree on a cell's points
    (a course built from another rubric: rebuild with ``python -m assignments build``).
    """
    recorded = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        grade_id = meta.get("grade_id", "")
        match = GRADE_ID.match(grade_id)
        if not match:
            raise GraderFailure(f"grade cell {grade_id!r} is not of the form check-<function>")
        name = match["name"]
        earned, available, checks = function_results(report, name)
        cell_points = float(meta.get("points", 0))
        if not checks:
            raise GraderFailure(f"grade cell {grade_id}: the grader's report has no check of {name!r}")
        if abs(available - cell_points) > 0.01:  # checks carry their share rounded to 1e-4
            raise GraderFailure(f"grade cell {grade_id} is worth {cell_points:g} points but the grader's rubric gives "
                                f"{name} {available:g}: rebuild the course (python -m assignments build) and release again")
        points = round(max(0.0, min(cell_points, earned)), 4)
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=cell_text(name, checks, report)),
            nbformat.v4.new_output("execute_result", data={"text/plain": f"{points:g}"}, execution_count=None),
        ]
        recorded[grade_id] = points
    return recorded


class GradeWithGrader(NbGraderPreprocessor):
    """Autograde step that grades the notebook with ``python -m grader grade`` (see the module docstring)."""

    timeout = Float(3600.0, help="Seconds the grader may take on one notebook.").tag(config=True)
    extra_args = List(Unicode(), help="More options for `python -m grader grade` (e.g. ['--sandbox', 'bwrap']). "
                                      "Default: $COURSE_GRADER_ARGS split on spaces.").tag(config=True)
    python = Unicode("", help="Interpreter that runs the grader (default: nbgrader's own).").tag(config=True)

    map_gate = Bool(False, help="Also run the mAP gate (it has no grade cell: its points are not recorded in the "
                                "gradebook; grade it with `python -m grader batch`, whose CSV has a map column).").tag(config=True)

    def _extra(self) -> list[str]:
        extra = list(self.extra_args) or os.environ.get("COURSE_GRADER_ARGS", "").split()
        # The notebook's maximum is its grade cells' (functions + overfit test): without a
        # cell to hold them, the gate's points would make the grader's total differ from nbgrader's.
        return extra if self.map_gate or "--no-map" in extra else [*extra, "--no-map"]

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict) -> tuple[nbformat.NotebookNode, dict]:
        assignment = assignment_of(resources)
        folder = Path(resources.get("metadata", {}).get("path") or ".")
        with tempfile.TemporaryDirectory(prefix="nbgrader-grade-") as tmp:
            target = Path(tmp) / f"{assignment}.ipynb"
            nbformat.write(nb, target)
            weights = folder / f"{assignment}_weights.pt"
            if weights.is_file() and not weights.is_symlink():
                shutil.copyfile(weights, Path(tmp) / weights.name)
            self.log.info("Grading %s with `python -m grader grade` (student code runs only in its sandbox)", target.name)
            report = run_grader(Path(tmp), assignment, extra_args=self._extra(), timeout=self.timeout,
                                python=self.python or None)
        recorded = apply_report(nb, report)
        self.log.info("Grader: %s / %s points (%s)", report.get("score"), report.get("max_score"),
                      ", ".join(f"{k}={v:g}" for k, v in recorded.items()))
        return nb, resources


class QuietOverwriteCells(OverwriteCells):
    """nbgrader's ``OverwriteCells`` without its false alarm on hidden tests.

    Every locked test cell of a release lacks its hidden-test region, so the
    stock preprocessor warns "checksum ... has changed" for each of them on
    every submission (nbgrader issue 1961), which buries a real tampering
    warning.  A cell whose source equals the gradebook's with the hidden
    region removed is restored silently; any other change still warns.
    """

    def preprocess_cell(self, cell, resources, cell_index):  # nbgrader's signature
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id is not None and cell.metadata.nbgrader.get("locked"):
            try:
                source_cell = self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
            except Exception:  # noqa: BLE001 - unknown cell: the stock code reports it
                source_cell = None
            if source_cell is not None and source_cell.locked and \
                    without_hidden_tests(source_cell.source).strip() == cell.source.strip():
                cell.source = source_cell.source
        return super().preprocess_cell(cell, resources, cell_index)
