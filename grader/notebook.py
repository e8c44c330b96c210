"""Getting a student's code out of a notebook, and grading from inside one (nbgrader).

* :func:`extract_student_code` / :func:`extract_submission` -- the source of a
  submission (``.ipynb``, ``.py`` or a folder holding one), taken from the
  nbgrader solution cells (``metadata.nbgrader.solution == true``), or, when
  that metadata is missing, from every code cell that defines something.
  Bare expressions and loops at the top level (``print(...)``, training
  runs, magics) are dropped: only definitions, imports and assignments are
  kept.  A cell with a syntax error loses only the definitions that do not
  parse (the others are graded); an unreadable file raises
  :class:`SubmissionError` with a clear message.
* :func:`grade_cell` -- called by the hidden region of the notebooks' graded
  test cells when a notebook is *executed* (``nbgrader validate``, an
  instructor running the source notebook): grades one function in the
  sandbox and raises ``AssertionError`` with the failed checks, or, with
  ``points=``, returns the points earned.  It decides no recorded score:
  whatever runs in a student's kernel can be patched by the student, so
  ``nbgrader autograde`` takes its points from ``python -m grader grade``
  run in a separate process (:mod:`assignments.autograde`).
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from grader.functions import DEPENDENCIES, STUDENT_FUNCTIONS, check_assignment
from grader.markers import BEGIN_HIDDEN_TESTS
from grader.parsing import parse as parse_python
from grader.submission_text import defined_names, top_level_statements

if TYPE_CHECKING:  # pragma: no cover - typing only
    from grader.results import GradeReport

#: Calls that mark a cell as a test cell (never part of the submission's code).
TEST_MARKERS = ("grade_cell(", "run_sanity(", BEGIN_HIDDEN_TESTS)
BLOCKED_IMPORTS = ("solutions", "grader")
#: Modules of the notebook's own tooling that graded code never needs: an import of one of them, or of a
#: submodule, is dropped.  ``data_utils.course_tools`` is the helpers' module; the bare ``course_tools``
#: is where notebooks released before it moved into the student package imported them from.
NOTEBOOK_ONLY_MODULES = ("data_utils.course_tools", "course_tools", "course_sanity", "google")


def is_notebook_only(module: str) -> bool:
    """Whether ``module`` (dotted) is one of :data:`NOTEBOOK_ONLY_MODULES` or inside one."""
    return any(module == m or module.startswith(f"{m}.") for m in NOTEBOOK_ONLY_MODULES)


class SubmissionError(ValueError):
    """The submission cannot be read at all (corrupt file, wrong format)."""


@dataclass
class Submission:
    path: str
    source: str
    notes: list[str] = field(default_factory=list)
    defined: set[str] = field(default_factory=set)
    #: names whose definition was dropped because it did not parse
    broken: dict[str, str] = field(default_factory=dict)


def _ipython_to_python(source: str) -> str:
    """Turn magics (``%time``, ``!pip``) into Python so that ``ast`` can parse the cell."""
    if not re.search(r"^\s*[%!]", source, flags=re.M):
        return source
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython missing or confused: comment the magics out
        return re.sub(r"^(\s*)([%!])", r"\1# \2", source, flags=re.M)


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _keep(node: ast.stmt, strict: bool = False) -> tuple[bool, str | None]:
    """Whether a top-level statement is kept; and a note when it is dropped for a reason worth telling.

    Solution cells keep definitions, imports, assignments, ``if``/``try``
    blocks; bare expressions and loops go.  ``strict`` (cells that are not
    solution cells) keeps only definitions, imports and assignments that call
    nothing (constants), so that a given "train the model" cell never runs.
    """
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        return False, None  # only legal at the top of a file; Python >= 3.11 needs none of them here
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if any(m.split(".")[0] in BLOCKED_IMPORTS for m in modules):
            return False, f"line {node.lineno}: importing {', '.join(modules)} is not allowed; the import was removed"
        # ``from data_utils import course_tools`` names the helpers' module too
        named = [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
        if any(is_notebook_only(m) for m in modules) or (named and all(is_notebook_only(n) for n in named)):
            return False, None  # notebook helpers (visible checks, display): never needed by graded code
        return True, None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True, None
    if _is_docstring(node):
        return True, None
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        if strict:
            value = getattr(node, "value", None)
            try:
                ast.literal_eval(value) if value is not None else None
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return False, None  # not a constant: belongs to the notebook's demo code
        return True, None
    if not strict and isinstance(node, (ast.If, ast.Try, ast.Global)):
        return True, None
    if strict and isinstance(node, (ast.If, ast.Try)):
        # A definition inside an ``if``/``try`` (``if torch.cuda.is_available(): ...``): kept when
        # everything inside would be kept on its own.
        inner = list(node.body) + list(node.orelse) + list(getattr(node, "finalbody", []))
        for handler in getattr(node, "handlers", []):
            inner += handler.body
        return all(isinstance(n, ast.Pass) or _keep(n, strict)[0] for n in inner), None
    return False, None


def _is_import(node: ast.stmt) -> bool:
    return isinstance(node, (ast.Import, ast.ImportFrom))


def _top_level_chunks(source: str) -> list[tuple[int, str]]:
    """Split source at lines starting in column 0 with a keyword that opens a
    top-level statement: used to salvage what parses from a broken cell."""
    lines = source.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines)
              if re.match(r"(def |class |async def |import |from |@|[A-Za-z_][A-Za-z0-9_]*\s*[:=])", line)]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    chunks = []
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        chunks.append((a, "".join(lines[a:b])))
    return chunks


def _parse(text: str) -> ast.Module:
    """``ast.parse`` that raises only ``SyntaxError`` (with a message saying why)."""
    try:
        return parse_python(text)
    except SyntaxError:
        raise
    except (RecursionError, MemoryError) as error:
        raise SyntaxError(f"too deeply nested or too long to parse ({type(error).__name__})") from None
    except ValueError as error:
        raise SyntaxError(f"cannot be parsed ({str(error)[:100]})") from None


#: Methods that change their receiver in place (``TABLE.append(x)`` fills ``TABLE``).
MUTATING_METHODS = {"append", "extend", "insert", "update", "setdefault", "add", "__setitem__", "copy_", "fill_", "zero_"}


def _written_names(node: ast.AST) -> set[str]:
    """Names a statement binds or changes: assignment targets, the base of ``X[k] = ...``
    and ``X.a = ...``, and receivers of in-place methods (``X.append``)."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            base = n.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in MUTATING_METHODS \
                and isinstance(n.func.value, ast.Name):
            names.add(n.func.value.id)
    return names


def module_names_used_by_functions(source: str) -> set[str]:
    """Global names that functions and classes of ``source`` read (their free, non-local
    variables), minus builtins: a top-level statement touching one of them matters."""
    import builtins
    import symtable

    try:
        table = symtable.symtable(source, "<submission>", "exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return set()
    used: set[str] = set()
    bound_by_definitions = {symbol.get_name() for symbol in table.get_symbols()
                            if symbol.is_imported() or symbol.is_namespace()}
    stack = list(table.get_children())
    while stack:
        child = stack.pop()
        stack.extend(child.get_children())
        for symbol in child.get_symbols():
            if symbol.is_global() and symbol.is_referenced():
                used.add(symbol.get_name())
    return used - bound_by_definitions - set(dir(builtins))


def clean_source(source: str, label: str, notes: list[str], broken: dict[str, str], strict: bool = False,
                 relevant: set[str] | None = None, notify: bool = True) -> tuple[str, set[str]]:
    """Keep the definitions of one cell/file (see module docstring); line numbers are preserved.

    ``relevant``: global names the submission's functions read.  A statement
    the rules would drop (a loop, a computed value) that touches one of them is
    kept in a solution cell (``strict=False``: the student meant it, e.g. a loop
    filling a lookup table) and, elsewhere, noted (``notify``; not for the
    notebook's given cells): the student is told it does not run at grading
    time, instead of losing the points silently.
    """
    python = _ipython_to_python(source)
    try:
        tree = _parse(python)
        pieces = [(0, python, tree)]
    except SyntaxError as error:
        pieces = []
        for offset, chunk in _top_level_chunks(python):
            try:
                pieces.append((offset, chunk, _parse(chunk)))
            except SyntaxError as chunk_error:
                match = re.match(r"\s*(?:@.*\n\s*)*(?:async\s+)?(?:def|class)\s+([A-Za-z_][A-Za-z0-9_]*)", chunk)
                name = match.group(1) if match else None
                line = offset + (chunk_error.lineno or 1)
                what = f"the definition of {name}" if name else "a statement"
                notes.append(f"{label}: syntax error at line {line} ({chunk_error.msg}); {what} there is not graded")
                if name:
                    broken[name] = f"syntax error in its definition ({label}, line {line}: {chunk_error.msg})"
        if not pieces:
            notes.append(f"{label}: syntax error at line {error.lineno} ({error.msg}); nothing in it is graded")
    out_lines = python.splitlines()
    kept_lines = [""] * len(out_lines)
    defined: set[str] = set()
    for offset, chunk, tree in pieces:
        chunk_lines = chunk.splitlines()
        kept_nodes = []
        for node in tree.body:
            keep, note = _keep(node, strict)
            if note:
                notes.append(f"{label}: {note}")
            if not keep and relevant and note is None and not _is_import(node):
                touched = sorted(_written_names(node) & relevant)
                if touched and not strict:
                    keep = True  # e.g. a loop filling a table the functions read
                elif touched and notify:
                    notes.append(f"{label}, line {offset + node.lineno}: this statement sets {', '.join(touched[:5])}, "
                                 "which your functions read, but it does not run at grading time (only definitions, "
                                 "imports and constants of cells other than solution cells do): move it into a solution "
                                 "cell or into the function")
            if not keep:
                continue
            kept_nodes.append(node)
            start = node.lineno - 1
            if getattr(node, "decorator_list", None):
                start = min(d.lineno for d in node.decorator_list) - 1
            for i in range(start, node.end_lineno):
                if offset + i < len(kept_lines):
                    kept_lines[offset + i] = chunk_lines[i] if i < len(chunk_lines) else ""
        defined |= defined_names(ast.Module(body=kept_nodes, type_ignores=[]))
    return "\n".join(kept_lines), defined


def _defines_something(source: str) -> bool:
    """Whether a cell defines a function or class at the top level (tolerates syntax errors)."""
    try:
        tree = _parse(_ipython_to_python(source))
    except SyntaxError:
        return bool(re.search(r"^(async\s+)?(def|class)\s", source, flags=re.M))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in top_level_statements(tree))


def _nbgrader_meta(cell: dict) -> dict:
    """A cell's ``metadata.nbgrader`` (``{}`` when missing or not an object)."""
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def _cell_text(cell: dict) -> str | None:
    """A cell's source as text, or None when it is neither a string nor a list of strings."""
    source = cell.get("source", "")
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    return None


def _is_test_cell(cell) -> bool:
    meta = _nbgrader_meta(cell)
    if meta.get("grade") and not meta.get("solution"):
        return True
    source = _cell_text(cell) or ""
    return any(marker in source for marker in TEST_MARKERS)


#: Largest submission file read (a notebook with its outputs).
MAX_FILE_BYTES = 64 << 20
#: Most entries a submission folder may hold.
MAX_FOLDER_ENTRIES = 5000


def read_submission_file(path: Path) -> bytes:
    """The bytes of a regular file of a submission, never through a symbolic link.

    ``O_NOFOLLOW`` refuses a link in the last component (a link elsewhere was
    refused by :func:`refuse_symlinks`); a FIFO or device is refused too, and
    the size is capped."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        if os.path.islink(path):
            raise SubmissionError(f"{path.name} is a symbolic link: submissions must be plain files") from None
        raise SubmissionError(f"{path.name} cannot be read ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError(f"{path.name} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise SubmissionError(f"{path.name} is {info.st_size >> 20} MiB; the limit is {MAX_FILE_BYTES >> 20} MiB "
                                  "(clear the notebook's outputs and save it again)")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise SubmissionError(f"{path.name} is larger than {MAX_FILE_BYTES >> 20} MiB")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def refuse_symlinks(path: Path) -> None:
    """Raise :class:`SubmissionError` if ``path`` or anything below it is a symbolic link.

    A link would make the trusted grader read (and grade) whatever it points
    to: the instructor's source notebook, say.  ``lstat`` only; nothing is followed."""
    import stat

    try:
        info = os.lstat(path)
    except OSError as error:
        raise SubmissionError(f"{path} cannot be read ({error.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise SubmissionError(f"{path.name} is a symbolic link: submissions must be plain files and folders "
                              "(extract archives with `python -m zipfile -e`, which creates no links)")
    if not stat.S_ISDIR(info.st_mode):
        return
    count, stack = 0, [path]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                count += 1
                if count > MAX_FOLDER_ENTRIES:
                    raise SubmissionError(f"{path.name} holds more than {MAX_FOLDER_ENTRIES} files")
                if entry.is_symlink():
                    raise SubmissionError(f"{Path(entry.path).relative_to(path)} in the submission is a symbolic link: "
                                          "submissions must be plain files and folders")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))


def _read_notebook(path: Path, notes: list[str] | None = None) -> dict:
    """The notebook's JSON, read with :mod:`nbformat` (converted to version 4 and validated;
    a validation problem is a note, what cannot be read at all a :class:`SubmissionError`)."""
    raw = read_submission_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SubmissionError(f"{path.name} is not valid UTF-8 (byte {error.start}): save the notebook again from Jupyter") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SubmissionError(f"{path.name} is not a valid notebook (JSON error at line {error.lineno}: {error.msg}); "
                              "it may be truncated or corrupt: download it again from Jupyter") from error
    except (RecursionError, MemoryError):
        raise SubmissionError(f"{path.name} is not a Jupyter notebook (its JSON is nested too deeply to read)") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise SubmissionError(f"{path.name} is not a Jupyter notebook (no list of cells)")
    try:
        import nbformat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing cell ids and the like: not the student's concern
            node = nbformat.from_dict(data)
            if node.get("nbformat", 4) != 4:
                node = nbformat.convert(node, 4)
            data = node
            nbformat.validate(node)
    except ImportError:
        pass
    except (RecursionError, MemoryError):
        raise SubmissionError(f"{path.name} is not a Jupyter notebook (nested too deeply to read)") from None
    except Exception as error:  # noqa: BLE001 - nbformat.ValidationError and conversion errors
        message = getattr(error, "message", None) or str(error)
        if notes is not None:
            notes.append(f"{path.name} is not a valid Jupyter notebook ({str(message).splitlines()[0][:200]}); "
                         "the cells that can be read are graded")
    return data


def resolve_submission_path(path: str | os.PathLike, assignment: str) -> Path:
    """A notebook/module file, or the one inside a folder (no symbolic links anywhere)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise SubmissionError(f"{path} does not exist")
    refuse_symlinks(path)
    if not path.is_dir():
        return path  # a file (a FIFO or a device is refused when read)
    candidates = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in (".ipynb", ".py")
                  and ".ipynb_checkpoints" not in p.parts and not p.name.startswith(".")]
    named = [p for p in candidates if p.stem == assignment]
    if len(named) == 1:
        return named[0]
    notebooks = [p for p in candidates if p.suffix == ".ipynb"]
    if len(notebooks) == 1:
        return notebooks[0]
    modules = [p for p in candidates if p.suffix == ".py"]
    if not notebooks and len(modules) == 1:
        return modules[0]
    if not candidates:
        raise SubmissionError(f"{path} holds no .ipynb or .py file")
    raise SubmissionError(f"{path} holds several candidate files ({', '.join(p.name for p in candidates[:6])}); "
                          f"name the notebook {assignment}.ipynb")


def extract_submission(path: str | os.PathLike, assignment: str) -> Submission:
    check_assignment(assignment)
    file = resolve_submission_path(path, assignment)
    notes: list[str] = []
    broken: dict[str, str] = {}
    if file.suffix == ".py":
        try:
            text = read_submission_file(file).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SubmissionError(f"{file.name} is not valid UTF-8 (byte {error.start})") from error
        first, _ = clean_source(text, file.name, [], {})
        source, names = clean_source(text, file.name, notes, broken, relevant=module_names_used_by_functions(first))
        return Submission(str(file), source, notes, names, broken)
    if file.suffix != ".ipynb":
        raise SubmissionError(f"{file.name}: expected a .ipynb notebook or a .py module")
    nb = _read_notebook(file, notes)
    cells: list[tuple[str, str, bool, bool]] = []  # (label, source, strict, given by the notebook)
    code_cells = [c for c in nb["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]
    has_metadata = any(_nbgrader_meta(c).get("solution") for c in code_cells)
    expected = set(STUDENT_FUNCTIONS[assignment]) | set(DEPENDENCIES[assignment])
    if not has_metadata:
        notes.append("no nbgrader solution metadata found: code was taken from every cell that defines something")
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        label = f"cell {index + 1}"
        metadata = cell.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or
                                     (metadata.get("nbgrader") is not None and not isinstance(metadata["nbgrader"], dict))):
            notes.append(f"{label}: its nbgrader metadata is not an object (ignored; the cell is treated as one you added)")
        source = _cell_text(cell)
        if source is None:
            notes.append(f"{label}: its source is not text ({type(cell.get('source')).__name__}); nothing in it is graded")
            continue
        # Test cells never count; other cells that are not solution cells
        # (given code, cells students added) contribute definitions only.
        if _is_test_cell(cell):
            continue
        meta = _nbgrader_meta(cell)
        strict = not meta.get("solution") if has_metadata else not _defines_something(source)
        cells.append((label, source, strict, has_metadata and bool(meta) and not meta.get("solution")))
    # Pass 1: what the functions read from module level; pass 2 keeps the statements that set it.
    # (the solution cells' functions: given helpers of the notebook read its demo settings, which
    # rightly do not run)
    first = "\n".join(clean_source(text, label, [], {}, strict=strict)[0] for label, text, strict, _ in cells if not strict)
    relevant = module_names_used_by_functions(first)
    parts: list[str] = []
    defined: set[str] = set()
    for label, source, strict, given in cells:
        cleaned, names = clean_source(source, label, notes, broken, strict=strict, relevant=relevant, notify=not given)
        if not names and not cleaned.strip():
            continue
        defined |= names
        parts.append(f"# --- {label} ---\n{cleaned}\n")
    missing = [n for n in STUDENT_FUNCTIONS[assignment] if n not in defined]
    if len(missing) == len(STUDENT_FUNCTIONS[assignment]) and not (defined & expected):
        notes.append("none of the assignment's functions is defined in this notebook (wrong assignment or file?)")
    return Submission(str(file), "\n".join(parts), notes, defined, broken)


def extract_student_code(notebook_path: str | os.PathLike, assignment: str) -> str:
    """The submission's source (see :func:`extract_submission`)."""
    return extract_submission(notebook_path, assignment).source


def grade_path(path: str | os.PathLike, assignment: str, **kwargs) -> GradeReport:
    """Grade a notebook, module or folder; unreadable files give a zero report with the reason."""
    from grader.grade import grade_source

    try:
        submission = extract_submission(path, assignment)
    except SubmissionError as error:
        return grade_source("", assignment, unreadable=str(error), submission=str(Path(path)), **kwargs)
    notes = list(kwargs.pop("notes", [])) + submission.notes
    return grade_source(submission.source, assignment, notes=notes, defined=submission.defined,
                        broken=submission.broken, submission=str(Path(path)), **kwargs)


# ---------------------------------------------------------------------------
# Inside a notebook (nbgrader autograde)
# ---------------------------------------------------------------------------

_SANDBOX = None


def _shared_sandbox():
    """One sandbox per kernel: the zygote boots once for all grade cells."""
    global _SANDBOX
    if _SANDBOX is None or _SANDBOX.proc is None and _SANDBOX.restarts > 20:
        import atexit

        from grader.sandbox import Sandbox

        _SANDBOX = Sandbox()
        _SANDBOX.start()
        atexit.register(_SANDBOX.close)
    return _SANDBOX


def source_from_kernel(namespace: dict, assignment: str) -> Submission:
    """The code this kernel has run: IPython's input history, definitions only."""
    history = namespace.get("In") or namespace.get("_ih")
    notes: list[str] = []
    broken: dict[str, str] = {}
    parts: list[str] = []
    defined: set[str] = set()
    if isinstance(history, list) and history:
        for index, cell in enumerate(history):
            if not isinstance(cell, str) or not cell.strip() or any(m in cell for m in TEST_MARKERS):
                continue
            # Cells that define functions/classes are treated like solution cells;
            # the others (demo, training, plotting) only contribute constants and imports.
            cleaned, names = clean_source(cell, f"input {index}", notes, broken, strict=not _defines_something(cell))
            if names or cleaned.strip():
                defined |= names
                parts.append(f"# --- input {index} ---\n{cleaned}\n")
        return Submission("<kernel>", "\n".join(parts), notes, defined, broken)
    import inspect

    for name in STUDENT_FUNCTIONS[assignment] + DEPENDENCIES[assignment]:
        obj = namespace.get(name)
        if obj is None:
            continue
        try:
            parts.append(inspect.getsource(obj))
            defined.add(name)
        except (OSError, TypeError):
            notes.append(f"could not recover the source of {name}")
    header = "import math\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nfrom torch import nn\n"
    return Submission("<namespace>", header + "\n\n".join(parts), notes, defined, broken)


class Points(float):
    """Points earned by a grade cell; displays as a bare number (nbgrader partial credit)."""

    def __repr__(self) -> str:
        return f"{float(self):g}"


def _reference_available() -> bool:
    try:
        import solutions  # noqa: F401  (only whether it imports matters)

        return True
    except ImportError:
        return False


def grade_cell(assignment: str, name: str, namespace: dict, points: float | None = None):
    """Grade one function (or ``"overfit"``) from inside the student's kernel.

    Runs the function's visible and hidden checks in the sandbox against the
    reference and prints one line per check (hidden checks by title only).

    * ``points=None``: raise ``AssertionError`` listing the failed checks
      (nbgrader then gives the cell no points); return ``None`` otherwise.
    * ``points=P``: never raise for a wrong answer; return the points earned,
      ``P * earned / available``, as the cell's result (nbgrader's partial
      credit reads it).

    Without :mod:`solutions` (a student's own machine) only the visible checks
    run, in-process, and a note says that hidden checks run at grading time.
    Nothing is written to stderr (nbgrader would zero the cell).
    """
    check_assignment(assignment)
    valid = STUDENT_FUNCTIONS[assignment] + ["overfit"]
    if name not in valid:
        raise ValueError(f"{name!r} is not graded in {assignment}; expected one of {valid}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not _reference_available():
            from grader.sanity import run_sanity

            print(f"{name}: visible checks only (hidden checks run when your notebook is graded)")
            results = [] if name == "overfit" else run_sanity(assignment, name, namespace)
            failed = [r for r in results if not r.passed]
            if failed and points is None:
                raise AssertionError("\n".join(f"{r.title}: {r.message}" for r in failed))
            return None if points is None else Points(0.0 if failed else points)

        from grader.grade import grade_source
        from grader.report import cell_summary

        submission = source_from_kernel(namespace, assignment)
        report = grade_source(submission.source, assignment, functions=[name], include_overfit=(name == "overfit"),
                              include_map=False, sandbox=_shared_sandbox(), notes=submission.notes,
                              only_overfit=(name == "overfit"), defined=submission.defined, broken=submission.broken)
        print(cell_summary(report, name))
        sys.stdout.flush()
        earned, available = report.score, report.max_score
        if points is None:
            failed = [c for c in report.checks if c.status not in ("passed", "skipped")]
            if failed:
                raise AssertionError(f"{name}: {len(failed)} of {len(report.checks)} checks failed:\n" +
                                     "\n".join(f"- {c.title}: {c.message.splitlines()[0] if c.message else c.status}" for c in failed))
            return None
        fraction = earned / available if available > 0 else 0.0
        return Points(round(min(points, points * fraction), 4))
