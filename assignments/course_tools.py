"""Helpers for the detection course notebooks (student side).

This file sits next to the assignment notebook.  It needs PyTorch and the
student package (``data_utils`` and the grader's visible-check runner
``grader.sanity``), never the course's reference solutions:

* :func:`check` -- the visible sanity check after each function you write:
  runs your function on small stored inputs and prints the relative error
  against stored expected values (``<assignment>_sanity.pt``, generated from
  the reference implementation);
* :func:`make_submission` -- checks that your notebook is saved and contains
  every required function, then writes ``<assignment>_submission.zip`` with
  exactly the file the grader needs.

Generated from ``assignments/course_tools.py`` by ``python -m assignments build``;
do not edit the copy next to a notebook.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

STUB_MARKER = "raise NotImplementedError()"


def rel_error(x, y, eps: float = 1e-10) -> float:
    """``max|x - y| / max(|x| + |y|, eps)``: 0 means equal, ~1e-7 is float32 round-off."""
    import torch

    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.numel() == 0:
        return 0.0
    return float((x - y).abs().max() / (x.abs() + y.abs()).clamp(min=eps).max())


def _caller_namespace(depth: int = 2) -> dict:
    return inspect.stack()[depth].frame.f_globals


def required_functions(assignment: str) -> list[str]:
    """The functions ``assignment`` grades, in notebook order."""
    from grader.functions import STUDENT_FUNCTIONS

    return list(STUDENT_FUNCTIONS[assignment])


def check(name: str, assignment: str | None = None, namespace: dict | None = None) -> None:
    """Sanity-check your ``name`` against stored expected values.

    Runs the visible cases of ``name`` (inputs and expected outputs stored in
    ``<assignment>_sanity.pt`` next to this file, computed by the reference)
    on the function defined in your notebook, prints one line per case with
    its relative error, and raises ``AssertionError`` when a case fails.
    ``assignment`` defaults to the one whose functions include ``name``
    (this folder's assignment first).
    """
    from grader.functions import STUDENT_FUNCTIONS
    from grader.sanity import run_sanity

    namespace = namespace if namespace is not None else _caller_namespace()
    if assignment is None:
        here = [p.name.removesuffix("_sanity.pt") for p in sorted(HERE.glob("*_sanity.pt"))]
        owners = [a for a in STUDENT_FUNCTIONS if name in STUDENT_FUNCTIONS[a]]
        owners.sort(key=lambda a: (a not in here, a))
        if not owners:
            raise KeyError(f"{name!r} is not a function of this course")
        assignment = owners[0]
    fixture = HERE / f"{assignment}_sanity.pt"
    if name not in namespace:
        raise NameError(f"{name} is not defined yet: run the cell that defines it first")
    print(f"{name}:")
    results = run_sanity(assignment, name, namespace, fixture_path=fixture)
    failed = [r for r in results if not r.passed]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(results)} sanity checks of {name} failed (see above)")


# --------------------------------------------------------------------------- submission


def _load_notebook(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RuntimeError(f"{path} is not a readable notebook ({error})") from None


def _code_cells(nb: dict) -> list[tuple[str, str]]:
    out = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
        out.append((grade_id, source))
    return out


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^(def|class)\s+{re.escape(name)}\b", source, flags=re.M) is not None


def _normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _last_executed_definition(name: str, history: list[str]) -> str | None:
    for source in reversed(history):
        if _defines(source, name):
            return source
    return None


def submission_problems(assignment: str, notebook: Path, history: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``(errors, unimplemented)`` for a saved notebook.

    errors: missing file, unreadable file, a required function missing from it,
    or (when the kernel's ``history`` of executed cells is given) a function
    whose last executed definition differs from the saved one (unsaved edits).
    unimplemented: required functions still containing the stub.
    """
    errors: list[str] = []
    unimplemented: list[str] = []
    if not notebook.is_file():
        return [f"{notebook} does not exist: save the notebook under this name, next to course_tools.py"], []
    try:
        cells = _code_cells(_load_notebook(notebook))
    except RuntimeError as error:
        return [str(error)], []
    for name in required_functions(assignment):
        defining = [source for grade_id, source in cells if grade_id == name or _defines(source, name)]
        if not defining:
            errors.append(f"{name}: no cell of the saved notebook defines it (was its cell deleted?)")
            continue
        saved = defining[-1]
        if STUB_MARKER in saved:
            unimplemented.append(name)
        if history is not None:
            executed = _last_executed_definition(name, history)
            if executed is not None and _normalise(executed) != _normalise(saved):
                errors.append(f"{name}: the saved notebook differs from the code you last ran "
                              "(save the notebook, or re-run the cell, then try again)")
    return errors, unimplemented


def make_submission(assignment: str, notebook: str | Path | None = None, *, allow_incomplete: bool = False,
                    out: str | Path | None = None) -> Path:
    """Check the saved notebook, then write ``<assignment>_submission.zip``.

    The archive holds exactly ``<assignment>.ipynb`` (the grader needs nothing
    else).  Fails with a list of problems when the notebook is missing, not
    saved, or lacks a required function; an unimplemented function (still
    ``raise NotImplementedError()``) is an error unless ``allow_incomplete``.
    """
    from grader.functions import STUDENT_FUNCTIONS

    if assignment not in STUDENT_FUNCTIONS:
        raise ValueError(f"unknown assignment {assignment!r}; expected one of {sorted(STUDENT_FUNCTIONS)}")
    notebook = Path(notebook) if notebook is not None else Path.cwd() / f"{assignment}.ipynb"
    history = None
    try:  # the cells this kernel executed, when running inside IPython
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            history = [s for s in shell.user_ns.get("In", []) if isinstance(s, str)]
    except ImportError:
        pass
    errors, unimplemented = submission_problems(assignment, notebook, history)
    if unimplemented and not allow_incomplete:
        errors.append("not implemented yet: " + ", ".join(unimplemented) +
                      " (to submit anyway: make_submission(..., allow_incomplete=True))")
    if errors:
        raise RuntimeError("cannot build the submission:\n  - " + "\n  - ".join(errors))
    out = Path(out) if out is not None else notebook.parent / f"{assignment}_submission.zip"
    info = zipfile.ZipInfo(f"{assignment}.ipynb", date_time=(2000, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    data = notebook.read_bytes()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(info, data)
    digest = hashlib.sha256(data).hexdigest()[:12]
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): {assignment}.ipynb, sha256 {digest}")
    if unimplemented:
        print("warning: not implemented: " + ", ".join(unimplemented), file=sys.stderr)
    return out
