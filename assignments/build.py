"""Build the nbgrader *source* notebooks from the text sources and ``solutions/``.

    python -m assignments build            # write assignments/course/source/<asg>/
    python -m assignments check            # fail if the committed files differ from a fresh build

Inputs (the only files a person edits):

* ``assignments/src/<asg>.md``: the notebook's prose and ordinary code cells in
  jupytext's Markdown format.  A code cell can hold a *directive* instead of
  code (lines starting with ``#|``):

  - ``#| student: NAME``  -> a solution cell holding the reference source of
    ``NAME`` (found in ``solutions/``, with the private helpers and constants
    it needs), followed by a graded, locked test cell: a visible sanity check
    (``check("NAME")``, stored expected values) and a hidden test region that
    calls the grader.  Points come from :mod:`assignments.spec`.
  - ``#| reuse: NAME``    -> an ungraded solution cell (code the student brings
    from the other assignment) and a locked, ungraded sanity check.
  - ``#| include: FILE``  -> the cell's code is ``assignments/src/FILE``
    (shared by both notebooks, e.g. the Colab setup cell), with
    ``{{ASSIGNMENT}}`` replaced by the assignment's name.
  - ``#| locked`` / ``#| id: NAME`` on an ordinary code cell: make it a
    read-only nbgrader cell (``id`` names it; default ``cell-<n>``).

  Markdown cells become read-only nbgrader cells.
* ``solutions/*.py``: each function written once.
* ``assignments/course_tools.py``: the student-side helper, copied next to
  every notebook.

Outputs (committed, checked for drift in CI): ``<asg>.ipynb``,
``course_tools.py`` and the sanity fixture (``<asg>_sanity.pt``, written by
:func:`grader.sanity.export_sanity_fixtures`).  The student package wheel
(``detection_course_student-*.whl``) is written next to them but not
committed (see :mod:`assignments.student_package`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import jupytext
import nbformat

from assignments import extract
from assignments.spec import ASSIGNMENTS, HERE, SOURCE_DIR, TOOLS_MODULE, AssignmentSpec

SCHEMA_VERSION = 3
DIRECTIVE = re.compile(r"^#\|\s*(?P<key>[\w-]+)\s*(?::\s*(?P<value>.*?))?\s*$")
#: Files of an assignment's source folder that the build writes and commits.
#: (Fixture names come from the grader; see fixture_name.)
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3", "file_extension": ".py",
                 "mimetype": "text/x-python", "codemirror_mode": {"name": "ipython", "version": 3},
                 "nbconvert_exporter": "python"}


class BuildError(RuntimeError):
    pass


def fixture_name(assignment: str) -> str:
    return f"{assignment}_sanity.pt"


# --------------------------------------------------------------------------- cells


def _nbgrader(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
              points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": SCHEMA_VERSION,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def _code(source: str, cell_id: str, nbgrader: dict | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    cell.id = cell_id
    if nbgrader is not None:
        cell.metadata["nbgrader"] = nbgrader
    return cell


def _markdown(source: str, cell_id: str, locked: bool = True) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source.strip("\n"))
    cell.id = cell_id
    if locked:
        cell.metadata["nbgrader"] = _nbgrader(cell_id, locked=True)
    return cell


def check_cell_source(assignment: str, name: str, graded: bool) -> str:
    """The test cell after a student function: visible check, then (graded) hidden tests."""
    lines = [
        f"# Sanity check: runs your `{name}` on small inputs and compares with stored expected values.",
        f'check("{name}")',
    ]
    if graded:
        lines += [
            "### BEGIN HIDDEN TESTS",
            'print("[hidden tests]", flush=True)',
            "from grader.notebook import grade_cell",
            f'grade_cell("{assignment}", "{name}", globals())',
            "### END HIDDEN TESTS",
        ]
    return "\n".join(lines)


def overfit_cell_source(assignment: str, model: str) -> str:
    """The overfit test's grade cell: the model's visible check, then the hidden overfit test."""
    return "\n".join([
        f"# Graded at grading time: the overfit test of your `{model}` (the grader trains it in its sandbox).",
        f'check("{model}")',
        "### BEGIN HIDDEN TESTS",
        "from grader.notebook import grade_cell",
        f'grade_cell("{assignment}", "overfit", globals())',
        "### END HIDDEN TESTS",
    ])


def present(source: str) -> str:
    """Reference text as students see it: docstring cross-references to
    ``solutions`` modules (which students do not have) point at the notebook's
    own names, or at ``data_utils.conventions``.  Code is never changed."""
    source = source.replace("solutions.conventions", "data_utils.conventions")
    return re.sub(r"(:\w+:`~?)solutions\.\w+\.(\w+)`", r"\1\2`", source)


def student_cell_source(name: str, skip: set[str], emitted: set[str]) -> str:
    """Reference source of ``name`` with the module-level helpers it needs that
    the notebook does not already have."""
    definition = extract.find_definition(name)
    parts = []
    for d in extract.with_helpers(name, definition.module, skip=skip | emitted):
        if extract.BEGIN_SOLUTION not in d.source and d.name == name:
            raise BuildError(f"{definition.module}.{name} has no '### BEGIN SOLUTION' region: nothing to write")
        parts.append(present(d.source))
        emitted.update(extract.bound_names_of_statement(d.node))
    return "\n\n\n".join(parts)


def _split_directives(source: str) -> tuple[dict[str, str], str]:
    directives, body = {}, []
    for line in source.splitlines():
        m = DIRECTIVE.match(line)
        if m and not body:
            directives[m["key"]] = (m["value"] or "").strip()
        else:
            body.append(line)
    return directives, "\n".join(body)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "cell"


def build_notebook(spec: AssignmentSpec) -> nbformat.NotebookNode:
    """The nbgrader source notebook of one assignment (no outputs)."""
    text = jupytext.read(spec.text_source, fmt="md")
    student_names = set(spec.functions) | set(spec.reused)
    emitted: set[str] = set()
    seen_student: list[str] = []
    seen_reused: list[str] = []
    cells: list[nbformat.NotebookNode] = []
    used_ids: set[str] = set()

    def unique(cell_id: str) -> str:
        base, k = cell_id, 2
        while cell_id in used_ids:
            cell_id = f"{base}-{k}"
            k += 1
        used_ids.add(cell_id)
        return cell_id

    for index, cell in enumerate(text.cells):
        if cell.cell_type == "markdown":
            heading = re.search(r"^#+\s+(.+)$", cell.source, flags=re.M)
            cells.append(_markdown(cell.source, unique("md-" + (_slug(heading[1]) if heading else str(index)))))
            continue
        if cell.cell_type != "code":
            raise BuildError(f"{spec.text_source}: unexpected {cell.cell_type} cell")
        directives, body = _split_directives(cell.source)
        if "student" in directives or "reuse" in directives:
            graded = "student" in directives
            name = directives["student" if graded else "reuse"]
            if body.strip():
                raise BuildError(f"{spec.text_source}: the '{name}' directive cell must hold nothing else")
            expected = spec.functions if graded else list(spec.reused)
            if name not in expected:
                raise BuildError(f"{spec.text_source}: {name!r} is not a {'graded' if graded else 'reused'} "
                                 f"function of {spec.name} (see assignments/spec.py)")
            (seen_student if graded else seen_reused).append(name)
            source = student_cell_source(name, student_names - {name}, emitted)
            cells.append(_code(source, unique(name), _nbgrader(name, solution=True)))
            check_id = unique(f"check-{name}")
            cells.append(_code(check_cell_source(spec.name, name, graded), check_id,
                               _nbgrader(check_id, grade=graded, locked=True,
                                         points=spec.points[name] if graded else None)))
            continue
        unknown = set(directives) - {"locked", "id", "include"}
        if unknown:
            raise BuildError(f"{spec.text_source}: unknown directive(s) {sorted(unknown)} in cell {index}")
        if "include" in directives:
            if body.strip():
                raise BuildError(f"{spec.text_source}: an include cell must hold nothing else")
            body = (spec.text_source.parent / directives["include"]).read_text()
            body = body.replace("{{ASSIGNMENT}}", spec.name)
        cell_id = unique(directives.get("id") or f"cell-{index}")
        meta = _nbgrader(cell_id, locked=True) if "locked" in directives else None
        cells.append(_code(body, cell_id, meta))

    # The overfit test is graded like a function (its points come from the
    # grader's rubric), so the notebook's maximum is the same as the CLI's.
    model = spec.overfit["model"]
    cells.append(_markdown(f"## Graded: the overfit test\n\nWhen your notebook is graded, the grader trains your "
                           f"`{model}` (built from your functions) on a few images, in its sandbox and with its own "
                           "settings, and checks that it learns them. Functions of yours that failed their own checks "
                           "are replaced by the reference's for this test, so a bug costs points in one place only. "
                           f"This cell only re-runs the sanity check of `{model}`.", unique("md-graded-overfit")))
    cells.append(_code(overfit_cell_source(spec.name, model), unique("check-overfit"),
                       _nbgrader("check-overfit", grade=True, locked=True, points=spec.overfit["points"])))

    if seen_student != spec.functions:
        raise BuildError(f"{spec.text_source}: graded functions {seen_student} differ from "
                         f"assignments/spec.py {spec.functions} (same names, same order)")
    if sorted(seen_reused) != sorted(spec.reused):
        raise BuildError(f"{spec.text_source}: reused functions {seen_reused} differ from {list(spec.reused)}")

    nb = nbformat.v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.cells = cells
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
    check_names(nb, spec)
    nbformat.validate(nb)
    return nb


def _python_of(cell_source: str) -> str:
    """Cell source without IPython magics / shell escapes (so ``ast`` can parse it)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


def check_names(nb: nbformat.NotebookNode, spec: AssignmentSpec) -> None:
    """Every name a code cell uses is defined by some code cell of the notebook.

    Catches a reference function that needs an import the notebook lacks
    (e.g. ``solutions`` imported a constant the notebook never imports) and,
    above all, any use of ``solutions`` in code students receive.
    """
    defined: set[str] = set()
    codes = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        python = _python_of(cell.source)
        hidden = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", python, flags=re.S)
        if re.search(r"^\s*(from|import)\s+solutions\b", hidden, flags=re.M):
            raise BuildError(f"{spec.name}: cell {cell.id} imports solutions outside a hidden test region")
        defined |= extract.top_level_bindings(python)
        codes.append((cell.id, python))
    missing = {}
    for cell_id, python in codes:
        undefined = extract.free_names(python) - defined - {"get_ipython", "display"}
        if undefined:
            missing[cell_id] = sorted(undefined)
    if missing:
        raise BuildError(f"{spec.name}: names used but defined by no cell: {missing}")


# --------------------------------------------------------------------------- files


def write_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n")


def fixture_assignments(spec: AssignmentSpec) -> list[str]:
    """Assignments whose sanity fixtures the folder needs: its own, plus the
    one defining the functions it reuses (their checks run there too)."""
    from grader.functions import STUDENT_FUNCTIONS

    owners = {a for name in spec.reused for a, names in STUDENT_FUNCTIONS.items() if name in names}
    return [spec.name] + sorted(owners - {spec.name})


def export_fixtures(spec: AssignmentSpec, out_dir: Path) -> list[Path]:
    """Write the sanity fixtures with the grader's exporter (expected values from the reference)."""
    from grader.sanity import export_sanity_fixtures

    paths = []
    for assignment in fixture_assignments(spec):
        path = out_dir / fixture_name(assignment)
        export_sanity_fixtures(assignment, path)
        paths.append(path)
    return paths


def build_assignment(spec: AssignmentSpec, out_dir: Path | None = None, *, wheel: bool = True,
                     fixtures: bool = True) -> list[Path]:
    """Write one assignment's source folder; returns the files written."""
    out_dir = out_dir or spec.source_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    nb_path = out_dir / spec.notebook_name
    write_notebook(build_notebook(spec), nb_path)
    written.append(nb_path)
    tools = out_dir / f"{TOOLS_MODULE}.py"
    shutil.copyfile(HERE / f"{TOOLS_MODULE}.py", tools)
    written.append(tools)
    if fixtures:
        written += export_fixtures(spec, out_dir)
    if wheel:
        from assignments.student_package import build_wheel

        for old in out_dir.glob("detection_course_student-*.whl"):
            old.unlink()
        written.append(build_wheel(out_dir))
    return written


BUILD_COMMAND = "python -m assignments build"


def ensure_release_files(source_root: Path | None = None, names: list[str] | None = None, log=print) -> list[Path]:
    """Make every assignment's source folder complete for ``nbgrader generate_assignment``.

    The student wheel is a build output that git ignores, so a fresh clone has
    none and nbgrader would silently release a folder whose first cell cannot
    install anything.  This builds the wheel into each folder when it is
    missing or differs from what the current sources give (the build is
    reproducible: same sources, same bytes), and raises :class:`BuildError`
    naming the command to run when a committed file (notebook, helper,
    fixtures) is missing.  ``names`` defaults to the assignments that have a
    folder under ``source_root``.  Returns the wheels it wrote.
    """
    from assignments.student_package import build_wheel, wheel_name, wheel_problems

    source_root = Path(source_root) if source_root is not None else SOURCE_DIR
    if names is None:  # the assignments this course folder holds (a copy may hold only one)
        names = [name for name in ASSIGNMENTS if (source_root / name).is_dir()]
    written = []
    for name in names:
        spec = ASSIGNMENTS[name]
        folder = source_root / name
        missing = [f for f in committed_files(spec) if not (folder / f).is_file()]
        if missing:
            raise BuildError(f"{folder} lacks {', '.join(missing)}: run `{BUILD_COMMAND}` from the repository root")
        wheel = folder / wheel_name()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                fresh = build_wheel(Path(tmp))
                if wheel.is_file() and wheel.read_bytes() == fresh.read_bytes():
                    continue
                problems = wheel_problems(fresh)
                if problems:
                    raise BuildError("the student wheel would hold answers: " + "; ".join(problems))
                for old in folder.glob("detection_course_student-*.whl"):
                    old.unlink()
                shutil.copyfile(fresh, wheel)
        except OSError as error:
            raise BuildError(f"could not write the student wheel into {folder} ({error}): "
                             f"run `{BUILD_COMMAND}` from the repository root") from error
        log(f"built the student package {wheel} (the release needs it next to the notebook)")
        written.append(wheel)
    return written


def ensure_release_files_or_exit(source_root: Path | None = None) -> None:
    """:func:`ensure_release_files` for ``nbgrader_config.py``: stops the nbgrader
    command with the message (traitlets would log and ignore an exception)."""
    import sys

    try:
        ensure_release_files(source_root, log=lambda text: print(text, file=sys.stderr))
    except BuildError as error:
        sys.exit(f"cannot generate the assignment: {error}")


def build(names: list[str] | None = None, out_root: Path | None = None, **kwargs) -> list[Path]:
    out_root = out_root or SOURCE_DIR
    written = []
    for name in names or list(ASSIGNMENTS):
        written += build_assignment(ASSIGNMENTS[name], out_root / name, **kwargs)
    return written


# --------------------------------------------------------------------------- drift


def committed_files(spec: AssignmentSpec) -> list[str]:
    """Names of the generated files that are committed for one assignment."""
    return [spec.notebook_name, f"{TOOLS_MODULE}.py"] + [fixture_name(a) for a in fixture_assignments(spec)]


def _same_fixture(a: Path, b: Path) -> bool:
    import torch

    if a.read_bytes() == b.read_bytes():
        return True
    from grader.compare import tree_close

    return tree_close(torch.load(a, map_location="cpu", weights_only=True),
                      torch.load(b, map_location="cpu", weights_only=True))


def drift(names: list[str] | None = None) -> list[str]:
    """Differences between the committed generated files and a fresh build (empty = none)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        build(names, fresh_root, wheel=False)
        for name in names or list(ASSIGNMENTS):
            spec = ASSIGNMENTS[name]
            for filename in committed_files(spec):
                fresh, committed = fresh_root / name / filename, spec.source_dir / filename
                if not fresh.exists() and not committed.exists():
                    continue
                if fresh.exists() != committed.exists():
                    problems.append(f"{committed}: {'missing' if fresh.exists() else 'no longer generated'}")
                elif filename.endswith(".pt"):
                    if not _same_fixture(fresh, committed):
                        problems.append(f"{committed}: expected values differ from the reference's")
                elif fresh.read_text() != committed.read_text():
                    problems.append(f"{committed}: differs from a fresh build")
    return problems


DRIFT_HINT = "run `python -m assignments build` and commit the result"


def describe_drift(problems: list[str]) -> str:
    return "generated course files are out of date:\n" + textwrap.indent("\n".join(problems), "  ") + \
        f"\n{DRIFT_HINT}"
