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

The wheel is built by hand with :mod:`zipfile` (no build backend, no
network): entries sorted, fixed timestamps, so the same sources give the same
bytes.  ``python -m assignments build`` writes it into every assignment's
source folder, so ``nbgrader generate_assignment`` puts it in the release and
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
import base64
import hashlib
import re
import tomllib
import zipfile
from functools import lru_cache
from pathlib import Path

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
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


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


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path) -> Path:
    """Write the student wheel into ``out_dir``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info_dir = f"{DIST_NAME}-{version()}.dist-info"
    metadata = "\n".join([
        "Metadata-Version: 2.1",
        f"Name: {DIST_NAME.replace('_', '-')}",
        f"Version: {version()}",
        "Summary: Student package of the object detection course: data, training loop, evaluation, plots "
        "(no reference solutions).",
        "Requires-Python: >=3.10",
        *[f"Requires-Dist: {r}" for r in REQUIRES],
        "",
    ]).encode()
    wheel = b"Wheel-Version: 1.0\nGenerator: assignments.student_package\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries = _package_files() + [
        (f"{info_dir}/METADATA", metadata),
        (f"{info_dir}/WHEEL", wheel),
        (f"{info_dir}/top_level.txt", ("\n".join(PACKAGES) + "\n").encode()),
    ]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{info_dir}/RECORD,,\n"
    entries.append((f"{info_dir}/RECORD", record.encode()))
    path = out_dir / wheel_name()
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    tmp.replace(path)
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
