"""The whole nbgrader round trip on a throw-away copy of the course.

    python -m assignments selftest [one_stage two_stage] [--keep DIR]

For each assignment: ``nbgrader generate_assignment``; ``nbgrader validate``
on the source notebook (all tests pass) and ``--invert`` on the release (every
test fails); three submissions (the release completed with the reference, the
untouched release, the reference with one planted bug); ``nbgrader
autograde``; the scores from the gradebook; ``nbgrader generate_feedback``
and a scan of the feedback HTML for hidden test code.  The tests in
``tests/test_notebooks_e2e.py`` run exactly this and assert on the report;
instructors can run it to check an installation before a term starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from assignments.extract import ROOT
from assignments.spec import ASSIGNMENTS, COURSE_DIR, COURSE_ID
from data_utils.cli_options import one_of
from grader.markers import BEGIN_HIDDEN_WORDS, END_HIDDEN_WORDS, HIDDEN_REGION

STUDENTS = {"reference": "ref", "release": "blank", "bug": "bug", "patcher": "patcher", "cross": "cross"}

#: Three lines a cheating student adds to an unlocked cell of the release: with
#: nbgrader's stock autograde (the notebook executed in the student's kernel)
#: they turned every grade cell into full marks.  They must change nothing.
KERNEL_PATCH = """import grader.notebook
grader.notebook.grade_cell = lambda *args, **kwargs: None
check = lambda *args, **kwargs: None
"""


@dataclass(frozen=True)
class PlantedBug:
    """A one-line change that breaks exactly one graded function."""

    function: str
    old: str
    new: str


#: One bug per assignment, each in a function whose result other graded
#: functions use (so the grader must isolate them to give the exact score).
PLANTED_BUGS = {
    "one_stage": PlantedBug("fcos_make_centerness_targets", "torch.sqrt(horizontal * vertical)",
                            "horizontal * vertical"),
    "two_stage": PlantedBug("rcnn_get_deltas_from_anchors", "torch.log(bw / pw), torch.log(bh / ph)",
                            "torch.log(bh / ph), torch.log(bw / pw)"),
}


@dataclass
class AssignmentReport:
    assignment: str
    max_score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    cell_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    validate_source: str = ""
    validate_release: str = ""
    errors_in_reference: list[str] = field(default_factory=list)
    feedback_leaks: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    planted_bug: bool = True
    #: {path: {student: {function or "overfit": points}}} for path in nbgrader, batch, gradescope.
    path_points: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    release_problems: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # nbgrader runs other console scripts (alembic) by name: the interpreter's
    # own bin/ must come first even when its virtualenv is not activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("NBGRADER_DB_URL", None)  # the copy always uses its own SQLite gradebook
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def nbgrader(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` with the project's interpreter."""
    exe = Path(sys.executable).with_name("nbgrader")
    cmd = [str(exe) if exe.exists() else "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=course, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_course(dest: Path, assignments: list[str]) -> Path:
    """A fresh course folder: the committed config and source folders, plus the
    student wheel (built here, as `python -m assignments build` does; it is not
    committed)."""
    from assignments.student_package import build_wheel

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(COURSE_DIR / "nbgrader_config.py", dest / "nbgrader_config.py")
    for name in assignments:
        shutil.copytree(ASSIGNMENTS[name].source_dir, dest / "source" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.whl", "*_submission.zip"))
        build_wheel(dest / "source" / name)
    return dest


def reference_submission(source_nb: Path, release_nb: Path) -> nbformat.NotebookNode:
    """The release notebook with every solution cell filled in from the source notebook."""
    source = nbformat.read(source_nb, as_version=4)
    release = nbformat.read(release_nb, as_version=4)
    solutions = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    filled = 0
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = solutions[meta["grade_id"]]
            filled += 1
    if filled != len(solutions):
        raise RuntimeError(f"{release_nb}: filled {filled} of {len(solutions)} solution cells")
    return release


def plant_bug(nb: nbformat.NotebookNode, bug: PlantedBug) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == bug.function:
            if bug.old not in cell.source:
                raise RuntimeError(f"planted bug: {bug.old!r} not found in {bug.function}")
            cell.source = cell.source.replace(bug.old, bug.new, 1)
            return nb
    raise RuntimeError(f"planted bug: no cell {bug.function}")


def kernel_patcher(release: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The untouched release plus :data:`KERNEL_PATCH` in a cell of the student's own (after the imports)."""
    nb = nbformat.from_dict(json.loads(json.dumps(release)))
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(KERNEL_PATCH))
    return nb


def cross_assignment(reference: nbformat.NotebookNode, release: nbformat.NotebookNode,
                     reused: tuple[str, ...]) -> nbformat.NotebookNode:
    """The reference submission with the code reused from the other assignment left as the release's stubs."""
    nb = nbformat.from_dict(json.loads(json.dumps(reference)))
    stubs = {c.metadata["nbgrader"]["grade_id"]: c.source for c in release.cells
             if c.metadata.get("nbgrader", {}).get("grade_id") in reused}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in stubs:
            cell.source = stubs[cell.metadata["nbgrader"]["grade_id"]]
    if len(stubs) != len(reused):
        raise RuntimeError(f"cross-assignment submission: found {sorted(stubs)} of {list(reused)}")
    return nb


def submit(course: Path, assignment: str, student: str, nb: nbformat.NotebookNode) -> Path:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{assignment}.ipynb"
    nbformat.write(nb, path)
    (folder / "timestamp.txt").write_text("2030-01-01 12:00:00.000000 UTC")
    return path


def execute_notebook(nb_path: Path, out_dir: Path, timeout: int = 900) -> Path:
    """Run a notebook top to bottom in a fresh kernel (with the small training settings
    nbgrader selects, ``NBGRADER_EXECUTION``); returns the executed copy.

    Autograding no longer executes notebooks, so this is how the selftest
    checks that the reference runs cleanly as students see it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
           f"--ExecutePreprocessor.timeout={timeout}", "--output-dir", str(out_dir), str(nb_path)]
    env = {**_env(), "NBGRADER_EXECUTION": "validate"}
    proc = subprocess.run(cmd, cwd=nb_path.parent, env=env, capture_output=True, text=True)
    out = out_dir / nb_path.name
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"executing {nb_path} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return out


def error_cells(nb_path: Path) -> list[str]:
    """``"<cell id>: <exception>"`` for every cell with an error output."""
    nb = nbformat.read(nb_path, as_version=4)
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                out.append(f"{cell.get('id', '?')}: {output.ename}: {output.evalue}"[:300])
    return out


def scores(course: Path, assignment: str) -> tuple[float, dict[str, float], dict[str, dict[str, float]]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id=COURSE_ID) as gb:
        max_score = gb.find_assignment(assignment).max_score
        totals, cells = {}, {}
        for submission in gb.assignment_submissions(assignment):
            student = submission.student.id
            totals[student] = submission.score
            cells[student] = {g.name: g.score for nb in submission.notebooks for g in nb.grades}
    return max_score, totals, cells


def _student_cells(nb_path: Path) -> list:
    """The cells of a submitted notebook that are not grade cells (what the student wrote or may edit)."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except (OSError, ValueError):
        return []
    return [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]


def feedback_leaks(course: Path, assignment: str, source_nb: Path) -> list[str]:
    """Hidden test text found in any feedback HTML of ``assignment``."""
    source = nbformat.read(source_nb, as_version=4)
    hidden_lines = set()
    for cell in source.cells:
        for region in HIDDEN_REGION.findall(cell.source):
            hidden_lines |= {line.strip() for line in region.splitlines() if line.strip()}
    # (a traceback of a hidden test would name the grader's files)
    needles = {BEGIN_HIDDEN_WORDS, END_HIDDEN_WORDS, "[hidden tests]", "grade_cell", "grader.notebook", "/grader/"}
    needles |= hidden_lines
    leaks = []
    files = sorted((course / "feedback").glob(f"*/{assignment}/*.html"))
    if not files:
        return ["no feedback HTML was generated"]
    import html

    for path in files:
        text = html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))
        # What the student wrote themselves (e.g. a notebook that patches
        # grade_cell) is not a leak when their feedback shows it back.
        student = path.relative_to(course / "feedback").parts[0]
        own = "\n".join(c.source for c in _student_cells(course / "submitted" / student / assignment / f"{assignment}.ipynb"))
        for needle in sorted(needles):
            if needle in text and needle not in own:
                leaks.append(f"{path.relative_to(course)}: {needle!r}")
    return leaks


def function_points(report: dict) -> dict[str, float]:
    """Points per graded item (function, ``overfit``) of a grader JSON report / Gradescope results."""
    if "tests" in report:  # Gradescope's results.json
        # the mAP gate's test is "map", or "map (skipped)" where it could not run
        return {t["name"]: round(float(t["score"]), 2) for t in report["tests"] if not t["name"].startswith("map")}
    totals: dict[str, float] = {}
    for c in report.get("checks", []):
        if c.get("kind") == "map":
            continue
        name = "overfit" if c.get("kind") == "overfit" else c["function"]
        totals[name] = totals.get(name, 0.0) + c["points"]
    return {k: round(v, 2) for k, v in totals.items()}


def batch_scores(course: Path, assignment: str, students: list[str], jobs: int = 2) -> dict[str, dict[str, float]]:
    """``python -m grader batch`` over nbgrader's ``submitted/`` folder: points per student and function."""
    out = course / "batch" / "grades.csv"
    cmd = [sys.executable, "-m", "grader", "batch", str(course / "submitted"), "--assignment", assignment,
           "--jobs", str(jobs), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`grader batch` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    reports = out.with_name("grades_reports")
    return {s: function_points(json.loads((reports / f"{s}.json").read_text())) for s in students}


def gradescope_scores(course: Path, assignment: str, notebooks: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each notebook through the Gradescope bundle's own ``run_autograder``: points per function."""
    from grader.gradescope import build_bundle, install_bundle

    bundle = build_bundle(assignment, course / "gradescope" / f"{assignment}.zip")
    out = {}
    for student, path in notebooks.items():
        root = install_bundle(bundle, course / "gradescope" / student)
        (root / "submission").mkdir(exist_ok=True)
        shutil.copy(path, root / "submission" / path.name)
        env = {**_env(), "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable}
        proc = subprocess.run([str(root / "run_autograder")], env=env, capture_output=True, text=True)
        results = root / "results" / "results.json"
        if proc.returncode != 0 or not results.is_file():
            raise RuntimeError(f"Gradescope run_autograder failed for {student} ({proc.returncode}):\n{proc.stderr[-3000:]}")
        out[student] = function_points(json.loads(results.read_text()))
    return out


def run_assignment(course: Path, assignment: str, log=print, plant: bool = True,
                   paths: bool = False) -> AssignmentReport:
    report = AssignmentReport(assignment, planted_bug=plant)
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        report.seconds[name] = round(now - t, 1)
        t = now
        log(f"  {assignment}: {name} ({report.seconds[name]} s)")

    nbgrader(course, "generate_assignment", assignment, "--force")
    lap("generate_assignment")
    from assignments.release import release_problems

    report.release_problems = release_problems(course / "release" / assignment, assignment)
    source_nb = course / "source" / assignment / f"{assignment}.ipynb"
    release_nb = course / "release" / assignment / f"{assignment}.ipynb"
    report.validate_source = nbgrader(course, "validate", str(source_nb)).stdout.strip()
    lap("validate source")
    report.validate_release = nbgrader(course, "validate", "--invert", str(release_nb)).stdout.strip()
    lap("validate --invert release")

    reference = reference_submission(source_nb, release_nb)
    release = nbformat.read(release_nb, as_version=4)
    submitted = {STUDENTS["reference"]: submit(course, assignment, STUDENTS["reference"], reference),
                 STUDENTS["release"]: submit(course, assignment, STUDENTS["release"], release)}
    if plant:
        submitted[STUDENTS["bug"]] = submit(course, assignment, STUDENTS["bug"], plant_bug(reference, PLANTED_BUGS[assignment]))
    if paths:
        submitted[STUDENTS["patcher"]] = submit(course, assignment, STUDENTS["patcher"], kernel_patcher(release))
        reused = ASSIGNMENTS[assignment].reused
        if reused:
            submitted[STUDENTS["cross"]] = submit(course, assignment, STUDENTS["cross"],
                                                  cross_assignment(reference, release, reused))
    nbgrader(course, "autograde", assignment, "--force")
    lap(f"autograde x{len(submitted)}")
    report.max_score, report.scores, report.cell_scores = scores(course, assignment)
    if paths:
        report.path_points["nbgrader"] = {
            s: {k.removeprefix("check-"): round(v, 2) for k, v in cells.items() if k.startswith("check-")}
            for s, cells in report.cell_scores.items()}
        report.path_points["batch"] = batch_scores(course, assignment, list(submitted))
        lap(f"grader batch x{len(submitted)}")
        chosen = {s: p for s, p in submitted.items() if s != STUDENTS["reference"]}
        report.path_points["gradescope"] = gradescope_scores(course, assignment, chosen)
        lap(f"gradescope x{len(chosen)}")
    report.errors_in_reference = error_cells(execute_notebook(source_nb, course / "executed"))
    lap("execute the source notebook")
    nbgrader(course, "generate_feedback", assignment, "--force")
    lap("generate_feedback")
    report.feedback_leaks = feedback_leaks(course, assignment, source_nb)
    return report


def selftest(assignments: list[str], workdir: Path | None = None, log=print,
             bugs: list[str] | None = None, parallel: bool = False, paths: bool = False) -> dict[str, AssignmentReport]:
    """Run the round trip; ``bugs``: assignments that get the planted-bug
    submission (default: all; each costs one more notebook execution).
    ``parallel``: each assignment in its own copy of the course (own
    gradebook), both at once -- nbgrader is mostly waiting on kernels and
    process start-ups, so two pipelines share two cores well.  ``paths``:
    also submit the kernel-patching and cross-assignment notebooks and grade
    every submission with ``grader batch`` and the Gradescope bundle too
    (:func:`path_problems` compares the three)."""
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="course-selftest-")) if owned else workdir
    bugs = list(assignments) if bugs is None else bugs
    try:
        if not parallel:
            course = copy_course(workdir / "course", assignments)
            return {name: run_assignment(course, name, log, plant=name in bugs, paths=paths) for name in assignments}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(assignments)) as pool:
            futures = {name: pool.submit(run_assignment, copy_course(workdir / name / "course", [name]), name, log,
                                         name in bugs, paths) for name in assignments}
            return {name: future.result() for name, future in futures.items()}
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


def course_of(workdir: Path, assignment: str, parallel: bool) -> Path:
    """The course folder :func:`selftest` used for ``assignment``."""
    return workdir / assignment / "course" if parallel else workdir / "course"


def expected_problems(report: AssignmentReport) -> list[str]:
    """What is wrong with a report (empty = the round trip behaved)."""
    spec = ASSIGNMENTS[report.assignment]
    bug = PLANTED_BUGS[report.assignment]
    problems = []
    cell_points = dict(spec.points, overfit=spec.overfit["points"])
    if report.max_score != spec.max_score:
        problems.append(f"max score {report.max_score} != {spec.max_score}")
    ref, blank, buggy = (report.scores.get(STUDENTS[k]) for k in ("reference", "release", "bug"))
    if ref != spec.max_score:
        failed = {k: v for k, v in report.cell_scores.get(STUDENTS["reference"], {}).items()
                  if k.startswith("check-") and v < cell_points[k.removeprefix("check-")]}
        problems.append(f"reference scored {ref} of {spec.max_score}; failing cells: {failed}")
    if blank != 0:
        problems.append(f"untouched release scored {blank}, expected 0")
    if report.planted_bug and buggy != spec.max_score - spec.points[bug.function]:
        lost = {k: v for k, v in report.cell_scores.get(STUDENTS["bug"], {}).items()
                if k.startswith("check-") and v < cell_points[k.removeprefix("check-")]}
        problems.append(f"planted bug in {bug.function}: scored {buggy}, expected "
                        f"{spec.max_score - spec.points[bug.function]}; cells losing points: {lost}")
    if "Success!" not in report.validate_source:
        problems.append("nbgrader validate on the source failed:\n" + report.validate_source[-3000:])
    if "Success!" not in report.validate_release:
        problems.append("nbgrader validate --invert on the release failed:\n" + report.validate_release[-3000:])
    if report.errors_in_reference:
        problems.append(f"cells raising in the reference run: {report.errors_in_reference}")
    if report.feedback_leaks:
        problems.append(f"hidden tests visible in feedback: {report.feedback_leaks}")
    problems += [f"release: {problem}" for problem in report.release_problems]
    return problems + path_problems(report)


def path_problems(report: AssignmentReport) -> list[str]:
    """Where the grading paths disagree, or a cheat or a reused stub changed a score (empty = one score per notebook)."""
    if not report.path_points:
        return []
    spec = ASSIGNMENTS[report.assignment]
    problems = []
    nbgrader_points = report.path_points["nbgrader"]
    for path, by_student in report.path_points.items():
        for student, points in by_student.items():
            expected = nbgrader_points.get(student)
            if expected is None:
                problems.append(f"{path}: {student} has no nbgrader grade")
            elif points != expected:
                diff = {k: (expected.get(k), points.get(k)) for k in sorted(set(expected) | set(points))
                        if expected.get(k) != points.get(k)}
                problems.append(f"{student}: {path} disagrees with nbgrader's gradebook (nbgrader, {path}): {diff}")
    patcher = report.scores.get(STUDENTS["patcher"])
    if patcher is not None and patcher != report.scores.get(STUDENTS["release"]):
        problems.append(f"the kernel-patching notebook scored {patcher}, the untouched release "
                        f"{report.scores.get(STUDENTS['release'])}")
    cross = report.scores.get(STUDENTS["cross"])
    if cross is not None and cross != spec.max_score:
        problems.append(f"reused code left as stubs cost points in {spec.name}: scored {cross} of {spec.max_score}")
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m assignments selftest``; an unknown assignment is bad usage (exit 2)."""
    parser.add_argument("assignments", nargs="*", type=one_of(ASSIGNMENTS), metavar="ASSIGNMENT",
                        help=f"which of {', '.join(ASSIGNMENTS)} (default: all)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--parallel", action="store_true", help="both assignments at once, each in its own course copy")
    parser.add_argument("--paths", action="store_true",
                        help="also grade every submission with `grader batch` and the Gradescope bundle and compare "
                             "(adds a kernel-patching and a cross-assignment submission)")


def main(argv: list[str] | None = None) -> int:
    """``python -m assignments selftest``: 0 when the round trip gave the expected scores, 1 when not."""
    parser = argparse.ArgumentParser(prog="python -m assignments selftest", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run :func:`selftest` as ``args`` (see :func:`add_arguments`) say and print its report."""
    args.assignments = args.assignments or list(ASSIGNMENTS)
    reports = selftest(args.assignments, args.keep, parallel=args.parallel, paths=args.paths)
    status = 0
    for name, report in reports.items():
        problems = expected_problems(report)
        print(f"{name}: scores {report.scores} of {report.max_score}; times {report.seconds}")
        for path, by_student in report.path_points.items():
            print(f"  {path}: " + "; ".join(f"{s} {sum(p.values()):g}" for s, p in by_student.items()))
        for problem in problems:
            print(f"  PROBLEM: {problem}")
        status |= bool(problems)
    print("selftest " + ("FAILED" if status else "passed"))
    return status
