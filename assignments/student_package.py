"""The package students install: ``data_utils`` and the visible-check runner, no answers.

The project's own ``pyproject.toml`` installs ``solutions`` (the reference
answers) and ``grader`` too, which is right for instructors and CI and wrong
for students.  This module writes a separate wheel,
``detection_course_student-<version>-py3-none-any.whl``, that contains

* the ``data_utils`` package (data, training engine, evaluation, plots, and
  the notebooks' helpers ``data_utils.course_tools``), and
* the part of ``grader`` that runs the *visible* sanity checks on the
  student's machine (:data:`STUDENT_GRADER_MODULES`: ``grader.sanity`` and
  what it imports, the ``grader.harness`` package included, and the course manifest ``grader/course.toml``
  that ``grader.functions`` reads); the hidden checks (``grader/checks*.py``), the rubric,
  the sandbox and the grading code stay with the instructors.

The sanity fixtures (expected values, no code) travel next to the notebook
in the released assignment folder.

The wheel is built by the build backend, setuptools, not zipped by hand
(issue #15): :func:`build_wheel` stages exactly the student files with a
generated ``pyproject.toml`` in a temporary folder and runs
``setuptools.build_meta`` on it (no network, no build isolation), so the
metadata, ``WHEEL`` and ``RECORD`` are what the packaging tools write and
check.  Fixed timestamps, modes and umask keep it reproducible: the same
sources and setuptools give the same bytes.  ``python -m assignments build``
writes it into every assignment's source folder, so ``nbgrader
generate_assignment`` puts it in the release and
the notebook's first cell can ``pip install`` it (on Colab) from the
assignment folder.  Instructors may also publish it and set
``COURSE_PACKAGE_URL`` (see the notebooks' first cell).

:func:`wheel_problems` proves what is inside: only ``data_utils/`` and the
metadata, no line of a reference body, no ``### BEGIN SOLUTION`` marker, no
module-level import of ``solutions``, no grader module outside
:data:`STUDENT_GRADER_MODULES` and :data:`STUDENT_GRADER_PACKAGES`, no definition (at any depth) named like a
graded function or class, and no definition equal to a reference one after
names and literals are normalised (:func:`definition_problems`).  The given
backbone the grader supplies to the second assignment lives in
``grader/_given.py``, which students do not get.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from functools import lru_cache
from pathlib import Path

from assignments.errors import BuildError
from assignments.extract import BEGIN_SOLUTION, ROOT
from grader.parsing import parse as parse_python

DIST_NAME = "detection_course_student"
PACKAGES = ("data_utils", "grader")
#: The grader modules students get: the visible-check runner and its imports.
STUDENT_GRADER_MODULES = ("__init__", "compare", "functions", "judges", "registry", "results", "sanity")
#: Grader subpackages students get whole: the harness that runs the visible checks (``grader.harness``).
STUDENT_GRADER_PACKAGES = ("harness",)
#: Data files of ``grader`` students get: the course manifest ``grader.functions`` reads (public facts only;
#: the rubric, with its check weights and thresholds, stays out).
STUDENT_GRADER_DATA = ("course.toml",)
#: Runtime requirements of data_utils (Colab already has all of them).
REQUIRES = ("torch>=2.1", "torchvision>=0.16", "numpy>=1.24", "pillow>=9.5", "matplotlib>=3.7", "tqdm>=4.64")
#: One line of what the package is (the wheel's ``Summary``).
SUMMARY = ("Student package of the object detection course: data, training loop, evaluation, plots "
           "(no reference solutions).")
REQUIRES_PYTHON = ">=3.10"
#: The wheel's timestamps, 2020-01-01T00:00:00Z, passed as ``SOURCE_DATE_EPOCH`` (the wheel writer honours it,
#: and the staged files carry it as their mtime too): the same sources give the same bytes, whenever built.
SOURCE_DATE_EPOCH = 1577836800
#: The umask the backend runs under: it writes the dist-info files with ``0o666 & ~umask`` and the wheel stores
#: that mode, so a builder whose umask is 002 (common on shared machines) would otherwise get other bytes.
BUILD_UMASK = 0o022
#: What the staged ``pyproject.toml`` asks of the backend (``[project]`` tables, normalised names).
SETUPTOOLS_REQUIREMENT = "setuptools>=77"
#: The backend, run in a fresh interpreter (``-I``: no PYTHONPATH, no user site) inside the staging folder:
#: setuptools reads the current directory and keeps global state, which a child keeps away from the caller.
BACKEND_SCRIPT = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def wheel_name() -> str:
    return f"{DIST_NAME}-{version()}-py3-none-any.whl"


def is_student_grader_file(name: str) -> bool:
    """Whether the grader file ``name`` (``grader/...``, a POSIX path) belongs in the student wheel:
    a module of :data:`STUDENT_GRADER_MODULES` or a file of a :data:`STUDENT_GRADER_PACKAGES` package."""
    parts = name.split("/")
    if len(parts) == 2:
        return Path(parts[1]).stem in STUDENT_GRADER_MODULES
    return len(parts) == 3 and parts[1] in STUDENT_GRADER_PACKAGES


def _package_files() -> list[tuple[str, bytes]]:
    """The contents rule: ``(POSIX name, bytes)`` of every file the wheel holds besides its dist-info, sorted:
    all of ``data_utils``'s modules, the student grader modules and packages, and :data:`STUDENT_GRADER_DATA`."""
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name = path.relative_to(ROOT).as_posix()
            if package == "grader" and not is_student_grader_file(name):
                continue
            files.append((name, path.read_bytes()))
    files += [(f"grader/{name}", (ROOT / "grader" / name).read_bytes()) for name in STUDENT_GRADER_DATA]
    return sorted(files)


def _pyproject(files: list[tuple[str, bytes]]) -> str:
    """The ``pyproject.toml`` staged next to ``files``: the packages named one by one (no discovery, so
    nothing but the staged files can get in) and the non-Python files as package data."""
    packages = sorted({Path(name).parent.as_posix().replace("/", ".") for name, _ in files if name.endswith(".py")})
    data: dict[str, list[str]] = {}
    for name, _ in files:
        if not name.endswith(".py"):
            data.setdefault(Path(name).parent.as_posix().replace("/", "."), []).append(Path(name).name)

    def toml(value) -> str:  # JSON strings and lists of them are TOML too
        return json.dumps(value)

    return "\n".join([
        "[build-system]",
        f"requires = {toml([SETUPTOOLS_REQUIREMENT])}",
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {toml(DIST_NAME)}",
        f"version = {toml(version())}",
        f"description = {toml(SUMMARY)}",
        f"requires-python = {toml(REQUIRES_PYTHON)}",
        f"dependencies = {toml(list(REQUIRES))}",
        "",
        "[tool.setuptools]",
        f"packages = {toml(packages)}",
        "include-package-data = false",
        "",
        "[tool.setuptools.package-data]",
        *[f"{toml(package)} = {toml(names)}" for package, names in sorted(data.items())],
        "",
    ])


def _stage(files: list[tuple[str, bytes]], staging: Path) -> None:
    """Write ``files`` and their ``pyproject.toml`` into ``staging`` with a fixed mode and mtime (the
    backend copies both into the wheel; the checkout's own vary with umask and ``git checkout`` time)."""
    for name, data in files:
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (staging / "pyproject.toml").write_text(_pyproject(files))
    for path in staging.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def _build_error(message: str) -> Exception:
    """A :class:`assignments.errors.BuildError`, which ``nbgrader generate_assignment`` turns into its stop
    message."""
    return BuildError(message)


def _run_backend(staging: Path, dist: Path) -> Path:
    """Build the staged project with setuptools into ``dist``; the wheel's path."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    proc = subprocess.run([sys.executable, "-I", "-c", BACKEND_SCRIPT, str(dist)], cwd=staging, env=env,
                          capture_output=True, text=True, umask=BUILD_UMASK, timeout=300)
    built = dist / (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0 or not built.name or not built.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise _build_error(f"setuptools could not build the student wheel (exit {proc.returncode}):\n{tail}\n"
                           f"It runs in {sys.executable}: install the backend there "
                           f"(`{sys.executable} -m pip install '{SETUPTOOLS_REQUIREMENT}'`) and build again.")
    return built


def contents_problems(path: Path, files: list[tuple[str, bytes]]) -> list[str]:
    """How the wheel at ``path`` differs from the staged ``files`` (empty: it holds exactly them, byte for
    byte, plus its ``.dist-info``).  The backend decides what it packs; this proves it packed the contents rule."""
    expected = dict(files)
    with zipfile.ZipFile(path) as archive:
        packed = {n: archive.read(n) for n in archive.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}
    problems = [f"{name}: missing from the wheel" for name in sorted(expected.keys() - packed.keys())]
    problems += [f"{name}: in the wheel but not staged" for name in sorted(packed.keys() - expected.keys())]
    problems += [f"{name}: differs from the source" for name in sorted(expected.keys() & packed.keys())
                 if expected[name] != packed[name]]
    return problems


def build_wheel(out_dir: Path) -> Path:
    """Build the student wheel with setuptools into ``out_dir``; returns its path.

    The files of the contents rule (:func:`_package_files`) are staged in a temporary folder with a
    generated ``pyproject.toml`` and built by ``setuptools.build_meta`` in a child interpreter (no
    network, no build isolation: the backend already installed).  Reproducible: fixed timestamps
    (:data:`SOURCE_DATE_EPOCH`), modes and umask, sorted entries (the wheel writer sorts), so the same
    sources and the same setuptools give the same bytes (``ensure_release_files`` compares them).
    Raises ``BuildError`` when the backend fails or packs anything but the staged files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _package_files()
    with tempfile.TemporaryDirectory(prefix="student-wheel-") as tmp:
        staging, dist = Path(tmp) / "src", Path(tmp) / "dist"
        _stage(files, staging)
        built = _run_backend(staging, dist)
        if built.name != wheel_name():
            raise _build_error(f"setuptools named the student wheel {built.name}, expected {wheel_name()} "
                             f"(the release check and the notebooks' first cell look for that name)")
        problems = contents_problems(built, files)
        if problems:
            raise _build_error("the built student wheel does not hold the student files: " + "; ".join(problems))
        path = out_dir / wheel_name()
        tmp_path = path.with_suffix(".tmp")  # the same folder: the replace below is atomic
        shutil.copyfile(built, tmp_path)
    tmp_path.replace(path)
    return path


def wheel_problems(path: Path) -> list[str]:
    """Everything wrong with a student wheel (empty list = clean)."""
    from assignments.extract import all_reference_body_lines

    reference = {line for lines in all_reference_body_lines().values() for line in lines if _significant(line)}
    problems = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            top = name.split("/", 1)[0]
            if top not in PACKAGES and not top.endswith(".dist-info"):
                problems.append(f"{name}: not part of the student package")
                continue
            if top == "grader" and not name.endswith(".py") and Path(name).name not in STUDENT_GRADER_DATA:
                problems.append(f"{name}: grader file not meant for students")
            if not name.endswith(".py"):
                continue
            text = archive.read(name).decode()
            if BEGIN_SOLUTION in text:
                problems.append(f"{name}: contains a solution marker")
            if re.search(r"^(from|import)\s+solutions\b", text, flags=re.M):
                problems.append(f"{name}: imports solutions at module level")
            if top == "grader" and not is_student_grader_file(name):
                problems.append(f"{name}: grader module not meant for students")
            leaked = sorted({line.strip() for line in text.splitlines()} & reference)
            if leaked:
                problems.append(f"{name}: holds reference lines, e.g. {leaked[0]!r}")
            problems += [f"{name}: {problem}" for problem in definition_problems(text)]
    return problems


#: Definitions smaller than this (AST nodes) are too generic to compare (``return x``).
MIN_COMPARED_NODES = 40


class _Normalise(ast.NodeTransformer):
    """Names, arguments, attributes' owners and literals replaced by placeholders: two
    definitions that differ only in spelling and constants dump the same."""

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(arg="_", annotation=None), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant(value=0), node)

    def _named(self, node):
        self.generic_visit(node)
        node.name = "_"
        node.decorator_list = []
        if hasattr(node, "returns"):
            node.returns = None
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            node.body = node.body[1:] or [ast.Pass()]  # the docstring
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _named


def normalised_dump(node: ast.AST) -> str:
    import copy

    return ast.dump(_Normalise().visit(copy.deepcopy(node)), annotate_fields=False)


def _definitions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


@lru_cache(maxsize=1)
def graded_names() -> frozenset[str]:
    """Every function and class a student writes, in either assignment."""
    from grader.functions import STUDENT_FUNCTIONS

    return frozenset(name for names in STUDENT_FUNCTIONS.values() for name in names)


@lru_cache(maxsize=1)
def reference_dumps() -> frozenset[str]:
    """Normalised dumps of every definition in ``solutions/`` big enough to be an answer."""
    from assignments.extract import all_solution_modules, module_path

    dumps = set()
    for module in all_solution_modules():
        for node in _definitions(parse_python(module_path(module).read_text())):
            if sum(1 for _ in ast.walk(node)) >= MIN_COMPARED_NODES:
                dumps.add(normalised_dump(node))
    return frozenset(dumps)


def definition_problems(text: str) -> list[str]:
    """A definition (at any depth) named like a graded function or class, or one whose
    normalised AST equals a reference definition's: a working answer in another form."""
    try:
        tree = parse_python(text)
    except SyntaxError as error:
        return [f"does not parse ({error.msg})"]
    problems = []
    for node in _definitions(tree):
        if node.name in graded_names():
            problems.append(f"defines {node.name!r} (line {node.lineno}), the name of a graded answer")
        elif sum(1 for _ in ast.walk(node)) >= MIN_COMPARED_NODES and normalised_dump(node) in reference_dumps():
            problems.append(f"{node.name!r} (line {node.lineno}) is a reference definition with names and literals changed")
    return problems


def _significant(line: str) -> bool:
    """A reference line worth searching for: code, not punctuation or a bare keyword."""
    line = line.strip()
    if line.startswith("#") or len(line) < 24:  # shorter lines are generic ("with torch.no_grad():")
        return False
    return bool(re.search(r"[A-Za-z_]\w*\s*[(=\[.]", line))
