"""Read reference code out of :mod:`solutions` without importing it.

The notebooks are generated from the reference modules: a student function's
cell is the exact source of that function (signature, docstring, and the
reference body between nbgrader's ``### BEGIN SOLUTION`` / ``### END
SOLUTION`` lines).  This module finds top-level definitions by parsing the
files, works out which private helpers and constants a definition needs, and
lists the names a piece of code uses that it does not define (so the build can
check that the notebook provides every one of them).
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grader.parsing import parse as parse_python

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS_DIR = ROOT / "solutions"
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"


@dataclass(frozen=True)
class Definition:
    """One top-level statement of a reference module that binds ``name``."""

    module: str  # e.g. "solutions.fcos_targets"
    name: str
    source: str  # exact text, with its leading ``#:`` / ``#`` comment block
    node: ast.stmt

    @property
    def is_function_or_class(self) -> bool:
        return isinstance(self.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def module_path(module: str) -> Path:
    """The file of a dotted module of this repository (``solutions.fcos`` -> ``ROOT/solutions/fcos.py``)."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


@lru_cache(maxsize=None)
def module_definitions(module: str) -> dict[str, Definition]:
    """``{name: Definition}`` for every top-level def, class and assignment of ``module``."""
    path = module_path(module)
    text = path.read_text()
    lines = text.splitlines()
    tree = parse_python(text, filename=str(path))
    out: dict[str, Definition] = {}
    for node in tree.body:
        names = bound_names_of_statement(node)
        if not names:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        # Attach the comment block right above (e.g. "#: doc of a constant").
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        source = "\n".join(lines[start:node.end_lineno])
        for name in names:
            out[name] = Definition(module, name, source, node)
    return out


def bound_names_of_statement(node: ast.stmt) -> list[str]:
    """Names a top-level statement binds (defs, classes, assignments; not imports)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def find_definition(name: str, modules: list[str] | None = None) -> Definition:
    """The definition of ``name`` in the reference modules (searched in ``modules``
    or in every ``solutions/*.py``); exactly one module may define it."""
    modules = modules or all_solution_modules()
    found = [module_definitions(m)[name] for m in modules if name in module_definitions(m)]
    if not found:
        raise KeyError(f"{name!r} is not defined at the top level of any of {modules}")
    if len(found) > 1:
        raise KeyError(f"{name!r} is defined in several modules: {[d.module for d in found]}")
    return found[0]


def all_solution_modules() -> list[str]:
    return sorted(f"solutions.{p.stem}" for p in SOLUTIONS_DIR.glob("*.py") if p.stem != "__init__")


def referenced_names(node: ast.AST) -> set[str]:
    """Every name loaded anywhere inside ``node`` (``torch`` in ``torch.cat`` included)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _bound_anywhere(node: ast.AST) -> set[str]:
    """Names bound anywhere inside ``node``: parameters, assignments, loop and
    comprehension targets, nested defs, ``with ... as``, ``except ... as``, imports."""
    bound: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bound.add(n.id)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in n.names)
    return bound


def free_names(code: str | ast.AST) -> set[str]:
    """Names ``code`` reads but never binds itself, builtins excluded (an
    over-approximation of what must exist in the enclosing namespace)."""
    node = parse_python(code) if isinstance(code, str) else code
    return referenced_names(node) - _bound_anywhere(node) - set(dir(builtins)) - {"__file__", "__name__"}


def top_level_bindings(code: str) -> set[str]:
    """Names a notebook cell binds at its top level (imports, defs, assignments)."""
    tree = parse_python(code)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.For, ast.With, ast.If, ast.Try)):
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
        else:
            names.update(bound_names_of_statement(node))
    return names


@lru_cache(maxsize=None)
def solution_imports(module: str) -> dict[str, str]:
    """``{name: source module}`` for ``from solutions.X import name`` lines of ``module``."""
    tree = parse_python(module_path(module).read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("solutions"):
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


def _resolve(name: str, module: str) -> Definition | None:
    """Where ``name``, as used in ``module``, is defined inside ``solutions`` (None: elsewhere)."""
    defs = module_definitions(module)
    if name in defs:
        return defs[name]
    source = solution_imports(module).get(name)
    if source is not None and name in module_definitions(source):
        return module_definitions(source)[name]
    return None  # imported from torch, data_utils, ... : the notebook imports it


def with_helpers(name: str, module: str, skip: set[str]) -> list[Definition]:
    """``name``'s definition preceded by the helpers it needs from ``solutions``.

    A helper is a definition in ``solutions`` that ``name`` uses (directly or
    through another helper): a private function or constant of the same
    module, or one imported from another reference module (``box_area``).
    Names in ``skip`` (defined elsewhere in the notebook, e.g. other student
    functions) are not helpers.  Helpers come first, dependencies before
    their users, each module in its own order.
    """
    root = module_definitions(module)[name]
    needed: list[Definition] = []
    seen = {(root.module, root.name)}

    def visit(d: Definition) -> None:
        for ref in sorted(referenced_names(d.node)):
            if ref in skip:
                continue
            target = _resolve(ref, d.module)
            if target is None or (target.module, target.name) in seen:
                continue
            seen.add((target.module, target.name))
            visit(target)  # its own helpers first
            needed.append(target)

    visit(root)
    out: list[Definition] = []
    sources: set[str] = set()
    for d in needed + [root]:
        if d.source not in sources:  # one statement may bind several names
            out.append(d)
            sources.add(d.source)
    return out


def solution_regions(source: str) -> list[str]:
    """The text strictly between each ``### BEGIN SOLUTION`` / ``### END SOLUTION`` pair."""
    regions, current = [], None
    for line in source.splitlines():
        if BEGIN_SOLUTION in line:
            current = []
        elif END_SOLUTION in line:
            if current is not None:
                regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


def all_reference_body_lines() -> dict[str, set[str]]:
    """``{module: {stripped line}}`` of every reference body in ``solutions/``."""
    out: dict[str, set[str]] = {}
    for module in all_solution_modules():
        text = module_path(module).read_text()
        out[module] = {line.strip() for region in solution_regions(text) for line in region.splitlines()}
    return out
